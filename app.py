"""Emotion Detection, as a Hugging Face Space: a FastAPI app with the REST API, with the Gradio UI mounted at /.

    python app.py                      # serves on $HOST:$PORT (default 0.0.0.0:7860)
    EMOTION_MODEL=hf-hub:org/name@v1 python app.py

Models come from models/ (the shipped exports), EMOTION_MODEL (the default when set) and the comma-separated
EMOTION_MODELS; each loads on its first request and is shared by all requests after it.
"""
from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from emotion import EmotionError  # noqa: E402
from webapp.api import build_router, install_error_handlers  # noqa: E402
from webapp.docs import install_docs  # noqa: E402
from webapp.models import ModelRegistry  # noqa: E402
from webapp.service import MAX_UPLOAD_BYTES  # noqa: E402
from webapp.ui import EXAMPLES, build_ui  # noqa: E402


def create_app() -> FastAPI:
    """The REST routes first, then the Gradio UI at "/" (a mount at "/" would swallow routes added after it)."""
    registry = ModelRegistry.from_env()
    app = FastAPI(title="Emotion Detection", version="1.0",
                  description="Faces in a photo -> calibrated probabilities over 8 emotions. "
                              "The Gradio UI is at /, its own API under /gradio_api/.", docs_url=None)
    install_error_handlers(app)
    app.include_router(build_router(registry))
    install_docs(app)  # /docs from local assets (works offline)
    demo = build_ui(registry)
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(EXAMPLES)])
    app.state.demo, app.state.registry = demo, registry
    return app


try:
    app = create_app()
except EmotionError as e:  # a misconfigured EMOTION_MODEL(S): one line naming the fix, not a traceback
    raise SystemExit(f"error: {e}") from None
demo = app.state.demo


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Open browser tabs hold Gradio's event streams forever: without a grace limit a restart would wait on them.
    uvicorn.run(app, host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "7860")),
                timeout_graceful_shutdown=5)
