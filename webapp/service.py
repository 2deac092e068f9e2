"""One request -> one JSON answer, shared by the REST route and the Gradio endpoints.

Options are validated here (not per route), images are size-checked before decoding, and every bad input becomes an
`EmotionError` whose `.status` and message the caller passes on unchanged.
"""
from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import replace
from typing import Any, Callable, Literal, Mapping

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emotion import EmotionError, ImageTooLargeError
from emotion.faces import RANGES
from emotion.crops import checked_box
from emotion.images import SEND_INSTEAD, file_pixels, load_image
from emotion.records import ImagePrediction

from .models import ModelRegistry
from .settings import current

MAX_FACES = 100
BOX_KEYS = ("x", "y", "w", "h")
INTERNAL_ERROR = "internal error (logged on the server): retry, or report it with the time of the request"
OPTIONS_HELP = (f"options: model (see GET /api/models), max_faces (1..{MAX_FACES}), min_detection_score (0..1), "
                f"range ({', '.join(RANGES)}), action_units (true or false), and a crop box x, y, w, h in pixels "
                "(all four, or none)")
ACTION_UNITS_DOC = ("also each face's facial action units (AU1, AU2, AU4, ... in 0..1), its 52 blendshapes and "
                    "action_units_reason (docs/action_units.md); off by default: it costs ~12-25 ms per face")


class OptionsError(EmotionError):
    status = 422


class PredictOptions(BaseModel):
    """What a caller may ask besides the image; form fields, query parameters and JSON keys all land here."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str | None = Field(None, description="a model id or source from GET /api/models; default if omitted")
    max_faces: int | None = Field(None, ge=1, le=MAX_FACES, description="keep at most this many faces")
    min_detection_score: float | None = Field(None, ge=0, le=1, description="drop detections scoring below this")
    range: Literal[RANGES] | None = Field(  # noqa: A003
        None, description="face search: 'auto' (default: a quick look for near faces, then the whole photo "
                          "unless one or two near faces make it a portrait), 'short' (the quick look only: faces "
                          "at least ~8% of the photo's long side; fastest), 'full' (the whole photo at once: also "
                          "a small face beside a portrait)")
    action_units: bool = Field(False, description=ACTION_UNITS_DOC)
    x: int | None = Field(None, ge=0, description="crop box left edge (pixels); skips detection")
    y: int | None = Field(None, ge=0, description="crop box top edge (pixels)")
    w: int | None = Field(None, gt=0, description="crop box width (pixels)")
    h: int | None = Field(None, gt=0, description="crop box height (pixels)")

    @model_validator(mode="after")
    def _whole_box(self) -> "PredictOptions":
        given = [k for k in BOX_KEYS if getattr(self, k) is not None]
        if given and len(given) != 4:
            raise ValueError(f"a crop box needs all of x, y, w, h; got only {', '.join(given)}")
        return self

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        return None if self.x is None else (self.x, self.y, self.w, self.h)


def parse_options(*sources: Mapping[str, Any] | None) -> PredictOptions:
    """Merge option mappings (later ones win; empty values are ignored) and validate them.

    A JSON `box` ({"x":..,"y":..,"w":..,"h":..} or [x, y, w, h]) is accepted as well as the four top-level keys.
    """
    merged: dict[str, Any] = {}
    for src in sources:
        for key, value in (src or {}).items():
            if key == "box" and value is not None:
                merged.update(_box_fields(value))
            elif value is not None and value != "":
                merged[key] = value
    try:
        return PredictOptions.model_validate(merged)
    except ValidationError as e:
        raise OptionsError(f"{_describe(e)}; {OPTIONS_HELP}") from None


def _box_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {k: value.get(k) for k in BOX_KEYS}
    if isinstance(value, (list, tuple)) and len(value) == 4:
        return dict(zip(BOX_KEYS, value))
    raise OptionsError(f"box must be {{\"x\", \"y\", \"w\", \"h\"}} or [x, y, w, h], not {value!r}")


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "options"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg} (got {repr(err['input'])[:80]})" if err["loc"] else msg)
    return "; ".join(parts)


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


def check_upload_size(size: int, what: str = "the upload") -> None:
    """ImageTooLargeError (413) for a photo over the upload limit, before it is opened."""
    limit = current().max_upload_bytes
    if size > limit:
        raise ImageTooLargeError(f"{what} is {megabytes(size)}, above the limit of {megabytes(limit)}: "
                                 "send a smaller file (a JPEG of the photo is usually well under)")


def decode_base64_image(text: Any) -> bytes:
    """Base64 (standard or URL-safe, padding optional) or a `data:image/...;base64,` URL -> the file's bytes."""
    fix = ('send {"image": "iVBORw0KGgo..."} (the file\'s bytes in base64) or a data URL such as '
           '"data:image/png;base64,iVBORw0KGgo...", or upload the file as multipart field "file"')
    if not isinstance(text, str) or not text.strip():
        raise EmotionError(f"'image' must be a non-empty string: {fix}")
    data = text.strip()
    if data.startswith("data:"):
        header, comma, data = data.partition(",")
        if not comma or not header.endswith(";base64"):
            raise EmotionError(f"the data URL is not base64-encoded ({header[:60]!r}): {fix}")
    data = "".join(data.split()).replace("-", "+").replace("_", "/")
    check_upload_size(len(data) * 3 // 4, "the decoded image")
    try:
        decoded = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EmotionError(f"'image' is not valid base64: {fix}") from None
    if not decoded:
        raise EmotionError(f"'image' decodes to nothing: {fix}")
    return decoded


def predict_image(registry: ModelRegistry, image: Any, options: PredictOptions) -> dict[str, Any]:
    """Detect and classify every face (or only the crop box) in `image` -> the API's JSON answer."""
    return predict_with_image(registry, image, options)[0]


def predict_with_image(registry: ModelRegistry, image: Any,
                       options: PredictOptions) -> tuple[dict[str, Any], Image.Image]:
    """`predict_image`'s answer and the image decoded for it, which the UI draws on: one decode per upload (the
    Predictor takes the decoded image as it is)."""
    key, result, img = predict_faces(registry, image, options)
    return answer(registry, key, result), img


def predict_faces(registry: ModelRegistry, image: Any,
                  options: PredictOptions) -> tuple[str, ImagePrediction, Image.Image]:
    """The model's id, the `ImagePrediction` (timings: detect, classify, decode, total) and the decoded image."""
    if isinstance(image, (bytes, bytearray)):
        if not image:
            raise EmotionError(f"the image is empty (0 bytes): {SEND_INSTEAD}")
        check_upload_size(len(image))
    key, predictor = registry.get(options.model)  # an unknown model fails before any decoding
    t0 = time.perf_counter()
    if options.box is not None:  # the box is in the file's pixels; a large JPEG decoded at the scale it needs
        img = load_image(image, min_side=None if options.action_units else box_side(options.box, predictor))
        size, (kx, ky) = file_pixels(img)
        box = checked_box(options.box, size)
        t1 = time.perf_counter()
        face = predictor.predict_crop(img, reduced_box(box, kx, ky, img.size), action_units=options.action_units)
        result = ImagePrediction([replace(face, box=box)], size,
                                 {"detect": 0.0, "classify": (time.perf_counter() - t1) * 1000})
        decode_ms = (t1 - t0) * 1000
    else:  # decoded at the size the search needs (a 12 MP JPEG at 1/4 scale), finer only where a face is small
        img, found = predictor.detect(image, max_faces=options.max_faces, min_score=options.min_detection_score,
                                      range=options.range)
        result = predictor.classify_detected([(img, found)], t0, options.action_units)[0]
        decode_ms = found.decode_ms
        result.timings_ms["detect"] -= decode_ms
    result.timings_ms.update(decode=decode_ms, total=(time.perf_counter() - t0) * 1000)
    return key, result, img


def box_side(box: tuple[int, int, int, int], predictor) -> Callable[[int], int]:
    """For `load_image`'s min_side: the long side at which the box's shorter side still spans twice the model's
    input (a 12 MP photo's 1000 px face decodes at 1/4 scale for a 48 px model), for a file of the given long side.
    (Action units read the box at 256 px: their requests decode whole.)"""
    need = 2 * max(predictor.info.input_size[-2:])

    def side(long_side: int) -> int:
        return math.ceil(long_side * need / max(1, min(box[2], box[3])))

    return side


def reduced_box(box: tuple[int, int, int, int], kx: float, ky: float,
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in the file's pixels -> the same box in an image decoded `kx` x `ky` times smaller (of `size`), at
    least one pixel, inside it."""
    x, y, w, h = box
    x0, y0 = min(size[0] - 1, round(x / kx)), min(size[1] - 1, round(y / ky))
    x1, y1 = min(size[0], max(x0 + 1, round((x + w) / kx))), min(size[1], max(y0 + 1, round((y + h) / ky)))
    return x0, y0, x1 - x0, y1 - y0


def answer(registry: ModelRegistry, key: str, result: ImagePrediction) -> dict[str, Any]:
    """The JSON answer for one image (`emotion.records`' shape) with the model that made it."""
    return {**result.to_dict(), "model": registry.describe(key)}
