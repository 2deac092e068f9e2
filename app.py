"""Emotion Detection, as a Hugging Face Space: a FastAPI app with the REST API, with the Gradio UI mounted at /.

    python app.py                      # serves on $HOST:$PORT (default 0.0.0.0:7860)
    EMOTION_MODEL=hf-hub:org/name@v1 python app.py

Models come from models/ (the shipped exports), EMOTION_MODEL (the default when set) and the comma-separated
EMOTION_MODELS; each loads on its first request and is shared by all requests after it. Every setting the server
reads from the environment is in webapp/settings.py, read and validated once in `create_app`.
"""
from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from emotion import EmotionError  # noqa: E402
from webapp.api import build_router, install_error_handlers  # noqa: E402
from webapp.bodies import BodyReaders  # noqa: E402
from webapp.docs import install_docs  # noqa: E402
from webapp.files import EXAMPLES  # noqa: E402
from webapp.guard import GradioRequestGuard  # noqa: E402
from webapp.live import install_live  # noqa: E402
from webapp.models import ModelRegistry  # noqa: E402
from webapp.pool import InferencePool, configure_threads  # noqa: E402
from webapp.settings import Settings, use  # noqa: E402
from webapp.ui import build_ui  # noqa: E402
from webapp.video import build_video_router  # noqa: E402


def create_app(settings: Settings | None = None) -> FastAPI:
    """The REST routes first, then the Gradio UI at "/" (a mount at "/" would swallow routes added after it).

    `settings` default to the environment's (`Settings.from_env`); a bad value raises EmotionError naming it."""
    settings = use(settings or Settings.from_env())
    registry, pool = ModelRegistry.from_settings(settings), InferencePool(settings.workers, settings.queue)
    configure_threads(pool.workers)
    app = FastAPI(title="Emotion Detection", version="1.0",
                  description="Faces in a photo -> calibrated probabilities over 8 emotions. "
                              "The Gradio UI is at /, its own API under /gradio_api/.", docs_url=None,
                  redoc_url=None)  # ReDoc only loads from a CDN: /redoc redirects to /docs (install_docs)
    install_error_handlers(app)
    app.include_router(build_router(registry, pool, settings))
    app.include_router(build_video_router(registry, pool))
    install_docs(app)  # /docs from local assets (works offline)
    install_live(app, registry)  # /live: the webcam read in the visitor's browser (its files served from here)
    app.add_middleware(GradioRequestGuard)  # checks bodies and file references before Gradio parses them
    demo = build_ui(registry, pool)
    # max_file_size: the largest file any tab takes (a video); photos are held to their own limit when read
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=settings.max_file_bytes,
                              allowed_paths=[str(EXAMPLES)])
    # mount_gradio_app never sets this, and until it is set Gradio skips its own check that an event's files
    # were uploaded to this server (launch() sets it). Our guard checks them first; this keeps Gradio's on too.
    demo.has_launched = True
    # Outermost, in front of every route: bodies still arriving cost a bounded reader, not an inference place.
    app.add_middleware(BodyReaders, total=settings.body_readers, per_client=settings.body_readers_per_client)
    app.state.demo, app.state.registry, app.state.pool, app.state.settings = demo, registry, pool, settings
    return app


def warm_up(app: FastAPI) -> bool:
    """Load the default model before serving, so the Space turns ready (its port opens) with it in memory and the
    first visitor does not wait for it; a model that cannot load is one error line at startup, and /api/health
    answers 503 with the same reason."""
    try:
        app.state.registry.get(None)
    except EmotionError as e:
        logging.getLogger("app").error("the default model cannot load: %s (/api/health answers 503 until fixed)", e)
        return False
    return True


try:
    app = create_app()
except EmotionError as e:  # a bad setting (EMOTION_MODEL, a limit, ...): one line naming the fix, not a traceback
    raise SystemExit(f"error: {e}") from None
demo = app.state.demo


if __name__ == "__main__":
    from webapp.server import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warm_up(app)
    run(app)  # $HOST:$PORT, with read deadlines for slow clients
