"""An ASGI middleware in front of Gradio's own routes (/gradio_api/...): it checks what Gradio would trust.

Gradio (6.x, mounted with `gr.mount_gradio_app`) hashes and copies any file an event refers to, on the event loop,
and its body parsers accept 1,000 files per upload and any JSON. So before Gradio sees a POST:
- a JSON body must parse (deep nesting, bad UTF-8: 400) and every file reference in it must be an upload of this
  server no larger than the page's upload limit (`files.check_file_ref`: 400/413 otherwise, without opening the
  file; each handler then holds its own kind to its own limit, a photo to EMOTION_MAX_UPLOAD_BYTES);
- a multipart body may hold at most MAX_PARTS parts and `upload_body_limit()` bytes (413).
How many bodies may be arriving at once is bounded in front of this guard, by `bodies.BodyReaders`.
Every refusal is `{"error": ...}` like the REST API's.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from emotion import EmotionError

from .bodies import Refusal, answer_for_app
from .files import check_file_ref, file_refs
from .service import megabytes
from .settings import FRAMING, current

log = logging.getLogger(__name__)

GRADIO_PREFIX = "/gradio_api/"
MAX_UPLOAD_FILES = 4  # per request: the UI and gradio_client send one file per upload
MAX_PARTS = 16  # files plus the few text fields of an image-editor blob upload


def upload_body_limit() -> int:
    """A multipart upload to Gradio: MAX_UPLOAD_FILES photos, or one file of the page's limit, and framing."""
    settings = current()
    return max(MAX_UPLOAD_FILES * settings.max_upload_bytes, settings.max_file_bytes) + FRAMING


class GradioRequestGuard:
    """Validates POST bodies under /gradio_api/ before Gradio parses them; everything else passes untouched."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(GRADIO_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        ctype = headers.get("content-type", "").lower()
        try:
            declared = headers.get("content-length", "")
            if ctype.startswith("multipart/"):
                _check_declared(declared, upload_body_limit())
                await self._multipart(scope, receive, send, ctype)
                return
            limit = current().photo_body_limit  # an event may carry one image as a data URL
            _check_declared(declared, limit)
            body = await _read_body(receive, limit)
            # FastAPI parses a body without a Content-Type as JSON too.
            if not ctype or ctype.startswith("application/json") or "+json" in ctype:
                _check_json(body)
        except Refusal as e:  # before Gradio saw the request
            await _refuse(scope, receive, send, e.status, str(e))
            return
        await self.app(scope, _replay(body, receive), send)

    async def _multipart(self, scope: dict, receive: Any, send: Any, ctype: str) -> None:
        """Counts parts and bytes as they stream by; past a limit, answers 413 and tells the app the client left."""
        boundary = ctype.partition("boundary=")[2].split(";")[0].strip().strip('"')
        delimiter = b"--" + boundary.encode("latin-1", "replace")
        state = {"size": 0, "parts": 0, "tail": b""}
        limit = upload_body_limit()

        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                chunk = state["tail"] + message.get("body", b"")
                state["size"] += len(message.get("body", b""))
                state["parts"] += chunk.count(delimiter)
                state["tail"] = chunk[-(len(delimiter) - 1):] if len(delimiter) > 1 else b""
                problem = (f"the upload is over {megabytes(limit)}" if state["size"] > limit
                           else f"the upload has more than {MAX_PARTS - 1} parts" if state["parts"] > MAX_PARTS
                           else None)
                if problem:
                    raise Refusal(413, f"{problem}: send at most {MAX_UPLOAD_FILES} files and "
                                       f"{megabytes(limit - FRAMING)} per request")
            return message

        await answer_for_app(self.app, scope, counting_receive, send)


def _check_declared(declared: str, limit: int) -> None:
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"the request body is {megabytes(int(declared))}, above the limit of "
                            f"{megabytes(limit)}: send a smaller file")


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"the request body is over {megabytes(limit)}: send a smaller file")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_json(body: bytes) -> None:
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError) as e:  # bad UTF-8 is a ValueError too; deep nesting a RecursionError
        what = "nested too deeply" if isinstance(e, RecursionError) else "not valid JSON"
        raise Refusal(400, f"the request body is {what}: send the JSON that Gradio's client sends") from None
    try:
        for path in file_refs(payload):
            check_file_ref(path, current().max_file_bytes)
    except EmotionError as e:
        raise Refusal(e.status, str(e)) from None


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return await receive()  # after the body: disconnect notifications
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
    log.info("refused %s %s: %s", scope["method"], scope["path"], message)
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
