"""POST /api/predict_video: a video upload -> per-frame, per-track emotions as JSON.

Same error rules as /api/predict (JSON `{"error": ...}`, 4xx for what the caller can fix). Bounded by design: the
upload size (EMOTION_MAX_VIDEO_BYTES) is checked while the body streams in, the duration (EMOTION_MAX_VIDEO_SECONDS)
from the header before any frame is decoded and again while decoding, the number of sampled frames by the duration
and the sampling, and one video is analysed at a time.
"""
from __future__ import annotations

import logging
import tempfile
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emotion import EmotionError, ImageTooLargeError
from emotion.video import VideoError, VideoPrediction, duration_s, open_video, predict_video

from .bodies import read_body, read_form
from .models import ModelRegistry
from .pool import InferencePool, ServerBusyError
from .service import ACTION_UNITS_DOC, INTERNAL_ERROR, MAX_FACES, OptionsError, megabytes
from .settings import current

log = logging.getLogger(__name__)

DEFAULT_FPS = 5.0  # sampled when the caller says neither every nor fps: a 2-minute clip is 600 analysed frames
HOW_TO_SEND = ('send the video as multipart/form-data field "file" (curl -F file=@clip.mp4) or as a raw video/* '
               'body; options every, fps, max_faces, min_detection_score, action_units as query parameters or form '
               'fields')
_one_at_a_time = threading.Semaphore(1)  # a video is many photos: one at a time keeps the CPU for /api/predict


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str | None = None
    every: int | None = Field(None, ge=1, le=1000, description="analyse every Nth frame")
    fps: float | None = Field(None, gt=0, le=30, description="analyse about this many frames per second")
    max_faces: int | None = Field(None, ge=1, le=MAX_FACES)
    min_detection_score: float | None = Field(None, ge=0, le=1)
    action_units: bool = Field(False, description=ACTION_UNITS_DOC + "; per row au_1, au_2, ..., smoothed along "
                               "each track")


def build_video_router(registry: ModelRegistry, pool: InferencePool) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["emotion"])

    @router.post("/predict_video")
    async def predict_video_route(request: Request) -> Any:
        """Every face in the video, tracked: `rows` (time_s, track, box, 8 probabilities, emotion; with
        action_units=true also au_1, au_2, ... and action_units_reason) and `tracks`."""
        data, fields = await _read_video(request)  # bounded by BodyReaders, not by the inference pool
        options = video_options(dict(request.query_params), fields)
        with pool.admit():  # a place in the bounded inference pool once the upload is in, or 503 with Retry-After
            return await _analyse_on(pool, registry, data, options)

    return router


async def _analyse_on(pool: InferencePool, registry: ModelRegistry, data: bytes, options: "VideoOptions") -> Any:
    try:
        return await pool.run(analyse, registry, data, options)
    except EmotionError:
        raise
    except Exception:
        log.exception("predict_video failed on a %d-byte upload", len(data))
        return JSONResponse({"error": INTERNAL_ERROR}, status_code=500)


def analyse(registry: ModelRegistry, data: bytes, options: VideoOptions) -> dict[str, Any]:
    """The REST answer for an uploaded video: rows, tracks and the model that made them."""
    with video_file(data) as path:
        key, result = run_video(registry, path, options)
    return {**result.to_dict(), "model": registry.describe(key)}


@contextmanager
def video_file(data: bytes) -> Iterator[str]:
    """The bytes in a private temp file (FFmpeg needs a seekable file), deleted afterwards."""
    if len(data) > current().max_video_bytes:
        raise too_large()
    with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def run_video(registry: ModelRegistry, path: str, options: VideoOptions,
              on_frame: Callable[[int, int | None], None] | None = None) -> tuple[str, VideoPrediction]:
    """Checks the duration from the header, then analyses the video if no other video is being analysed.

    Returns the model's id and the prediction; `on_frame(done, estimated_total)` follows the sampled frames."""
    key, predictor = registry.get(options.model)
    container, stream = open_video(path)
    seconds, rate = duration_s(container, stream), float(stream.average_rate or 0)
    container.close()
    max_seconds = current().max_video_seconds
    if seconds is not None and seconds > max_seconds:
        raise ImageTooLargeError(f"the video lasts {seconds:.0f} s, above the limit of {max_seconds:.0f} "
                                 "s: cut it or send a shorter clip")
    fps = options.fps if options.every is None else None
    if fps is None and options.every is None:
        fps = DEFAULT_FPS
    total = None
    if seconds and (fps or rate):
        total = round(seconds * fps) if fps else round(seconds * rate / options.every)
    detect = {k: v for k, v in {"max_faces": options.max_faces, "min_score": options.min_detection_score}.items()
              if v is not None}
    if not _one_at_a_time.acquire(blocking=False):  # never park a worker behind another video
        raise ServerBusyError("another video is being analysed: retry in a minute")
    try:
        return key, predict_video(predictor, path, options.every, fps, progress=False, max_seconds=max_seconds,
                                  on_frame=None if on_frame is None else lambda n: on_frame(n, total),
                                  action_units=options.action_units, **detect)
    finally:
        _one_at_a_time.release()


def video_options(*sources: dict[str, Any]) -> VideoOptions:
    """Merged option mappings (empty values ignored), validated; OptionsError (422) names every bound."""
    merged = {k: v for src in sources for k, v in src.items() if v not in (None, "")}
    try:
        return VideoOptions.model_validate(merged)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise OptionsError(f"{problems}; options: every (1..1000) or fps (0..30), max_faces (1..{MAX_FACES}), "
                           "min_detection_score (0..1), action_units (true or false), model") from None


async def _read_video(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The video bytes (refused with 413 as soon as they pass the limit) and the form fields."""
    body = await read_body(request, current().video_body_limit, lambda size, at_least: too_large())
    if not body:
        raise EmotionError(f"the request body is empty: {HOW_TO_SEND}")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await read_form(request, body, max_files=1, max_fields=20, how_to_send=HOW_TO_SEND)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise EmotionError(f'the form has no file in field "file": {HOW_TO_SEND}')
        data = await upload.read()
        if not data:
            raise EmotionError(f"the uploaded file is empty: {HOW_TO_SEND}")
        return data, {k: v for k, v in form.items() if isinstance(v, str)}
    if ctype.startswith("video/") or ctype == "application/octet-stream":
        return body, {}
    raise VideoError(f"unsupported Content-Type {ctype or '(none)'!r}: {HOW_TO_SEND}")


def too_large() -> ImageTooLargeError:
    """The refusal of a video over the size limit (REST and the Video tab say the same)."""
    return ImageTooLargeError(f"the video is over the limit of {megabytes(current().max_video_bytes)}: send a "
                              "shorter or smaller clip")
