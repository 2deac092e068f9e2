"""The REST routes: POST /api/predict, GET /api/health, GET /api/models, and the JSON error handlers.

Every error is `{"error": "<what went wrong and what to send>"}` with a 4xx status for anything the caller can fix;
a 5xx only when the server itself is at fault, and never with a stack trace.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model, model_serializer
from starlette.datastructures import UploadFile

from emotion import LABELS, EmotionError, ImageTooLargeError, UnsupportedImageError
from emotion.records import ACTION_UNIT_FIELDS, FACE_JSON, IMAGE_JSON

from .bodies import read_body, read_form
from .models import ModelRegistry
from .pool import InferencePool
from .service import INTERNAL_ERROR, PredictOptions, decode_base64_image, megabytes, parse_options, predict_image
from .settings import Settings, current

log = logging.getLogger(__name__)

HOW_TO_SEND = ('send the photo as multipart/form-data field "file" (curl -F file=@photo.jpg), as JSON '
               '{"image": "base64 or data URL"}, or as a raw image/* body')


# ----------------------------------------------------------------------------------------------------- response shapes
def _schema(name: str, table: dict[str, tuple[Any, str]], base: type[BaseModel] | None = None,
            **types: Any) -> type[BaseModel]:
    """A pydantic model of one of `emotion.records`' JSON tables (`types` replaces some fields' types); a field
    that may be null defaults to null."""
    fields = {}
    for key, (kind, description) in table.items():
        kind = types.get(key, kind)
        fields[key] = (kind, Field(None if _nullable(kind) else ..., description=description))
    return create_model(name, __base__=base, **fields)


class _AskedFields(BaseModel):
    """Leaves the action-unit fields out of a face that did not ask for them, as `records.face_json` does."""

    @model_serializer(mode="wrap")
    def _omit_unasked(self, handler):
        data = handler(self)
        if isinstance(data, dict) and data.get("action_units") is None and data.get("action_units_reason") is None:
            for key in ACTION_UNIT_FIELDS:
                data.pop(key, None)
        return data


def _nullable(kind: Any) -> bool:
    return type(None) in getattr(kind, "__args__", ())


# The REST shapes are the records' own (a photo's face has no track).
Face = _schema("Face", {k: v for k, v in FACE_JSON.items() if k != "track"}, base=_AskedFields)


class BlendshapeHeadFacts(BaseModel):
    label: str = Field(description="the label whose logit the head adds to")
    features: int = Field(description="how many features it reads: blendshapes and landmark asymmetries")
    landmark_features: int = Field(description="of those, the mouth's asymmetries measured on the landmarks")
    gate: float = Field(description="the landmarker runs on faces whose label logit is within this of the top one")


class ModelDescription(BaseModel):
    id: str
    source: str = Field(description="hf-hub:org/name[@revision], or local:<id> for a model folder on the server")
    revision: str | None
    default: bool
    loaded: bool
    architecture: str | None = None
    labels: list[str] | None = None
    temperature: float | None = None
    uncertain_threshold: float | None = None
    blendshape_head: BlendshapeHeadFacts | None = Field(
        None, description="once loaded: the model's second look at one label from Face Landmarker's mouth features "
        "(emotion/blendshape_head.py), or null when it has none")


Prediction = create_model("Prediction", __base__=_schema("Image", IMAGE_JSON, faces=list[Face]),
                          model=(ModelDescription, ...))


class ErrorBody(BaseModel):
    error: str


def errors(settings: Settings) -> dict[int, dict]:
    """The documented error answers of POST /api/predict."""
    return {s: {"model": ErrorBody, "description": d} for s, d in {
        400: "bad image data, options or model name",
        413: f"over {megabytes(settings.max_upload_bytes)} or 40 megapixels", 415: "not an image format we read",
        422: "an option out of range", 429: "this address is already sending too many bodies (with Retry-After)",
        503: "no model could be loaded, or the server is busy (then with Retry-After)"}.items()}

PREDICT_DOC = {
    "parameters": [{"name": name, "in": "query", "required": False, "schema": schema, "description":
                    schema.get("description", "")} for name, schema in
                   PredictOptions.model_json_schema()["properties"].items()],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            **PredictOptions.model_json_schema()["properties"]}}},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "description": "the file's bytes in base64, or a data: URL"},
            **PredictOptions.model_json_schema()["properties"]}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}},
}


# -------------------------------------------------------------------------------------------------------------- routes
def build_router(registry: ModelRegistry, pool: InferencePool, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["emotion"])

    @router.post("/predict", response_model=Prediction, responses=errors(settings), openapi_extra=PREDICT_DOC)
    async def predict(request: Request) -> Any:
        """Every face in the photo with its box, emotion, confidence, uncertain flag and all 8 probabilities.

        Options (model, max_faces, min_detection_score, range, crop box x/y/w/h) come as query parameters, form fields
        or JSON keys. With a crop box there is no detection: the one face returned is the box itself.
        """
        image, fields = await read_image(request)  # bounded by BodyReaders, not by the inference pool
        options = parse_options(dict(request.query_params), fields)
        with pool.admit():  # a place once the body is complete and decoded, or 503 when workers + queue are taken
            try:
                return await pool.run(predict_image, registry, image, options)
            except EmotionError:
                raise
            except Exception:  # a bug, not the caller's fault: log the trace here, answer without it
                log.exception("predict failed on a %d-byte image with %s", len(image), options)
                return JSONResponse({"error": INTERNAL_ERROR}, status_code=500)

    @router.get("/predict", include_in_schema=False, status_code=405)
    def predict_get() -> Any:  # without it the UI mounted at "/" would answer a confusing 404
        return JSONResponse({"error": f"use POST for /api/predict: {HOW_TO_SEND}"}, status_code=405,
                            headers={"Allow": "POST"})

    @router.get("/health", responses={503: {"model": ErrorBody}})
    def health() -> Any:
        """Readiness: 200 once the default model is loaded (this call loads it if no request has yet), else 503 with
        the reason, so a health check fails while every predict would."""
        try:
            registry.get(None)
        except EmotionError as e:
            return JSONResponse({"status": "unavailable", "error": str(e)}, status_code=503)
        return {"status": "ok", "default_model": registry.default,
                "loaded_models": [k for k in registry.sources if registry.is_loaded(k)],
                "labels": list(LABELS), "max_upload_bytes": settings.max_upload_bytes}

    @router.get("/models")
    def models() -> Any:
        """The models a request may name (`model`), the default first among equals."""
        return {"default": registry.default, "models": [registry.describe(k) for k in registry.sources]}

    return router


# ---------------------------------------------------------------------------------------------------- reading a body
async def read_image(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The image bytes and the option fields from a multipart, JSON or raw-image body."""
    body = await read_body(request, current().photo_body_limit, _too_large)
    if not body:
        raise EmotionError(f"the request body is empty: {HOW_TO_SEND}")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _from_form(request, body)
    if ctype == "application/json" or ctype.endswith("+json"):
        return _from_json(body)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return body, {}
    raise UnsupportedImageError(f"unsupported Content-Type {ctype or '(none)'!r}: {HOW_TO_SEND}")


def _too_large(size: int, at_least: bool = False) -> ImageTooLargeError:
    return ImageTooLargeError(f"the request body is {'over ' if at_least else ''}{megabytes(size)}, above the "
                              f"limit of {megabytes(current().max_upload_bytes)} per image: send a smaller file")


async def _from_form(request: Request, body: bytes) -> tuple[bytes, dict[str, Any]]:
    form = await read_form(request, body, max_files=2, max_fields=50, how_to_send=HOW_TO_SEND)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k not in ("file", "image")}
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        data = await upload.read()
        if not data:
            raise EmotionError(f"the uploaded file {upload.filename or ''!r} is empty: {HOW_TO_SEND}")
        return data, fields
    if upload is not None:
        raise EmotionError(f'the form field "file" holds text, not a file: {HOW_TO_SEND}')
    if isinstance(form.get("image"), str) and form["image"]:  # urlencoded: an unescaped "+" arrives as " "
        return decode_base64_image(form["image"].replace(" ", "+")), fields
    raise EmotionError(f'the form has no "file" field: {HOW_TO_SEND}')


def _from_json(body: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        payload = json.loads(body)
    except ValueError as e:  # bad UTF-8 (UnicodeDecodeError) is a ValueError too
        raise EmotionError(f"the body is not valid JSON ({e}): {HOW_TO_SEND}") from None
    except RecursionError:  # "[" * 100000: the parser's recursion limit, not a server fault
        raise EmotionError(f"the JSON body is nested too deeply: {HOW_TO_SEND}") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise EmotionError(f'the JSON body needs an "image" key: {HOW_TO_SEND}')
    return decode_base64_image(payload.pop("image")), payload


# ------------------------------------------------------------------------------------------------------------- errors
def install_error_handlers(app: FastAPI) -> None:
    """JSON errors for everything the API raises; unexpected ones are logged with their trace, answered without."""

    @app.exception_handler(EmotionError)
    async def _known(request: Request, exc: EmotionError) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)  # 503 busy: when to come back
        return JSONResponse({"error": str(exc)}, status_code=exc.status,
                            headers={"Retry-After": str(retry)} if retry else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so the server logs the trace; the caller never sees it.
        return JSONResponse({"error": INTERNAL_ERROR}, status_code=500)
