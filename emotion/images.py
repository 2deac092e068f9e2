"""Anything a user may hand us (path, bytes, upload, PIL image, numpy array) -> one upright RGB PIL image.

Every failure is an `EmotionError` whose message says what to send instead, so the app can answer 4xx and the
CLI can print it. Size is checked from the header before any pixels are decoded.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from .errors import EmotionError, ImageTooLargeError, UnsupportedImageError

logger = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # 40 MP: above any phone photo, far below what would exhaust memory when decoded
# Pillow's own bomb check (a warning above the limit, an error above twice it) at ours, for every decoder in the
# process (Gradio's included), not its default of ~89 MP.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
STRIP_PIXELS = 1 << 20  # transparency is composited this many pixels at a time, not on full-size RGBA copies
# Only formats Pillow decodes itself; EPS (Ghostscript) and the exotic plugins are not worth their risk.
# "JPEG" also opens MPO, the multi-picture JPEG many phones write.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
SEND_INSTEAD = "send a JPEG, PNG, WebP, BMP, GIF or TIFF file"
WHITE = (255, 255, 255)
# Set in the `info` of an image this module decoded, to its size: handing that image back to `load_image` (the web
# app decodes an upload, then the Predictor is given it) returns it as it is, instead of a second pass over it.
LOADED = "emotion.loaded"
# Set in the `info` of an image decoded at a reduced scale (`load_image`'s min_side): the upright size of the file.
FILE_SIZE = "emotion.file_size"


def load_image(src: Any, min_side: int | Callable[[int], int] | None = None) -> Image.Image:
    """Reads an image from any supported source and returns it upright, in RGB.

    EXIF orientation is applied, transparency is composited on white, animated images give their first frame,
    and 16-bit / float pixels are scaled to 8 bits.

    Args:
        src: a path (str or Path), the encoded bytes, a binary file-like object, a PIL image, or a numpy array
            (HxW gray, HxWx3 RGB or HxWx4 RGBA; uint8, uint16, other integers or floats in [0, 1] or [0, 255]).
        min_side: the long side the caller needs (or a function of the file's long side that says it): a JPEG
            at least twice as large is decoded at 1/2, 1/4 or 1/8 scale in the DCT (Pillow's `draft`), the
            smallest that keeps this side; `file_pixels` maps the result back. Other sources decode whole.

    Returns:
        A fully decoded PIL image in mode "RGB". Handed back to `load_image`, an image it decoded is returned as it
        is: a caller may decode an upload once and pass the image on.

    Raises:
        ImageTooLargeError: the image has more than MAX_PIXELS pixels.
        UnsupportedImageError: the data is not an image we can decode (wrong format, truncated, empty).
        EmotionError: the path does not exist, or `src` is of a type we do not take.
    """
    if isinstance(src, Image.Image):
        if src.mode == "RGB" and src.info.get(LOADED) == src.size:
            return src  # decoded and checked by this function already
        return _finish(src, "the given PIL image")
    if isinstance(src, np.ndarray):
        return _loaded(_to_rgb(_from_array(src)))
    if isinstance(src, (str, os.PathLike)):
        return _open_path(Path(src), min_side)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(src)), f"the given bytes ({len(src)} bytes)", min_side)
    if hasattr(src, "read"):
        name = str(getattr(src, "name", "the given file object"))
        # Pillow needs to seek; uploads (sockets, spooled streams) may not allow it.
        seekable = getattr(src, "seekable", lambda: False)()
        return _decode(src if seekable else io.BytesIO(src.read()), name, min_side)
    raise EmotionError(f"load_image() takes a path, bytes, a file object, a PIL image or a numpy array, "
                       f"not {type(src).__name__}: {SEND_INSTEAD}")


def check_size(width: int, height: int) -> None:
    """Raises ImageTooLargeError when width x height exceeds MAX_PIXELS."""
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the limit of "
            f"{MAX_PIXELS / 1e6:g} megapixels: send a smaller image (resize it to at most "
            f"{int((MAX_PIXELS * width / height) ** 0.5)}x{int((MAX_PIXELS * height / width) ** 0.5)})")


def file_pixels(img: Image.Image) -> tuple[tuple[int, int], tuple[float, float]]:
    """The size of the upright image `img` was decoded from, and the factors (x, y) from `img`'s pixels to that
    image's: ((W, H), (1.0, 1.0)) unless `load_image` decoded it at a reduced scale."""
    size = img.info.get(FILE_SIZE)
    if not size or tuple(img.size) == tuple(size):
        return img.size, (1.0, 1.0)
    return tuple(size), (size[0] / img.width, size[1] / img.height)


def planned_size(src: Any, min_side: int | Callable[[int], int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """What `load_image(src, min_side)` will decode, read from the file's header alone (no pixel decoded): the
    file's upright size and the upright size it decodes at, or None where it decodes whole (not a JPEG, or not
    twice `min_side`), `src` is not bytes or a path, or the header does not read (`load_image` says why)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        try:
            fp = Path(src).open("rb")
        except OSError:
            return None
    else:
        return None
    try:
        with fp, Image.open(fp, formats=("JPEG",)) as img:
            if img.width * img.height > MAX_PIXELS:
                return None  # refused by load_image
            upright = _drafted(img, min_side)
            size = (img.height, img.width) if _turned(img) else img.size
    except Exception:  # not a JPEG, or a damaged one: decoded whole, or refused, by load_image
        return None
    return (upright, size) if size != upright else None


def _open_path(path: Path, min_side=None) -> Image.Image:
    try:
        fp = path.open("rb")
    except FileNotFoundError:
        raise EmotionError(f"no file at '{path}': check the path, or {SEND_INSTEAD}") from None
    except OSError as e:  # a directory, no permission, a name too long
        raise EmotionError(f"could not open '{path}' ({e.strerror or e}): {SEND_INSTEAD}") from None
    with fp:
        return _decode(fp, f"'{path}'", min_side)


def _decode(fp: Any, name: str, min_side=None) -> Image.Image:
    """Opens (header only), checks the size, then decodes all pixels (at a reduced scale where `min_side` allows)
    while we can still report failure."""
    try:
        img = Image.open(fp, formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(_bomb_message(name, e)) from None
    except Exception as e:  # untrusted bytes: any decoder failure means "not an image we can read"
        raise UnsupportedImageError(f"could not read an image from {name}: {SEND_INSTEAD}") from e
    check_size(*img.size)  # on the header, before any pixel is decoded
    upright = _drafted(img, min_side)  # before _finish turns it (and drops its orientation)
    out = _finish(img, name)
    if out.size != upright:
        out.info[FILE_SIZE] = upright
    return _loaded(out)


def _drafted(img: Image.Image, min_side: int | Callable[[int], int] | None) -> tuple[int, int]:
    """The opened file's upright size, after asking a JPEG's decoder for the scale `min_side` allows (`_draft`; a
    callable: of the upright long side). Nothing is decoded: `load_image` and `planned_size` plan alike."""
    upright = _upright(img)
    if min_side is not None and img.format == "JPEG":
        _draft(img, min_side(max(upright)) if callable(min_side) else min_side)
    return upright


def _draft(img: Image.Image, side: int) -> None:
    """Asks the JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) whose long side is still >= `side`."""
    scale = max(1, int(side)) / max(img.size)
    if scale <= 0.5:
        img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))


def _upright(img: Image.Image) -> tuple[int, int]:
    """The size of the opened file's pixels once upright: swapped where its EXIF orientation turns it a quarter."""
    return (img.height, img.width) if _turned(img) else img.size


def _turned(img: Image.Image) -> bool:
    """Whether the opened file's EXIF orientation turns it a quarter (5-8)."""
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    except Exception:  # a damaged EXIF block: _finish reports it when it applies the orientation
        return False


def _loaded(img: Image.Image) -> Image.Image:
    img.info[LOADED] = img.size
    return img


def _bomb_message(name: str, error: Exception) -> str:
    """Pillow's own refusal (above twice its limit, checked on open), in our words."""
    return (f"{name} is too large to decode ({error}), above the limit of {MAX_PIXELS / 1e6:g} megapixels: "
            "send a smaller image")


def _finish(img: Image.Image, name: str) -> Image.Image:
    check_size(*img.size)
    # LOAD_TRUNCATED_IMAGES must stay False, or a cut-off JPEG decodes "successfully" with grey padding.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images will not be detected")
    try:
        img.load()  # animated files: frame 0, which Pillow has selected on open
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        rgb = _to_rgb(img)
        if orientation != 1:  # in place: no second full-size copy (and the RGB copy carries no EXIF)
            rgb.getexif()[ExifTags.Base.Orientation] = orientation
            ImageOps.exif_transpose(rgb, in_place=True)
        return rgb
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(_bomb_message(name, e)) from None
    except EmotionError:
        raise
    except Exception as e:  # truncated data, corrupt EXIF, broken palette: all mean the file is damaged
        raise UnsupportedImageError(
            f"could not read an image from {name} (the file is damaged or incomplete: {e}): {SEND_INSTEAD}"
        ) from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; alpha is composited on white so transparent areas are not black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # convert("L") would clip 16-bit and float values at 255 instead of scaling them.
        return _to_rgb(_from_array(np.asarray(img)))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        return _on_white(img)
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise UnsupportedImageError(f"cannot convert a {img.mode} image to RGB: {SEND_INSTEAD}") from e


def _on_white(img: Image.Image) -> Image.Image:
    """An image with transparency -> RGB on white, one strip of rows at a time (peak: the output + one strip)."""
    out = Image.new("RGB", img.size, WHITE)
    rows = max(1, STRIP_PIXELS // max(1, img.width))
    for top in range(0, img.height, rows):
        box = (0, top, img.width, min(img.height, top + rows))
        strip = img.crop(box).convert("RGBA")
        out.paste(strip, box[:2], strip)  # the strip's alpha is the mask: out = rgb * a + white * (1 - a)
    return out


def load_alpha(src: Any) -> Image.Image | None:
    """The transparency of an image file (e.g. an editor's brush layer) as an "L" mask, None when it has none.

    The same sources, size checks and errors as `load_image`; no EXIF rotation (editor layers carry none).
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    elif not hasattr(src, "read"):
        raise EmotionError(f"load_alpha() takes bytes or a file object, not {type(src).__name__}")
    try:
        img = Image.open(src, formats=FORMATS)
        check_size(*img.size)
        img.load()
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.getchannel("A") if "A" in img.getbands() else None
    except EmotionError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(_bomb_message("the layer", e)) from None
    except Exception as e:
        raise UnsupportedImageError(f"could not read an image layer: {SEND_INSTEAD}") from e


def _from_array(arr: np.ndarray) -> Image.Image:
    """An HxW / HxWx1 / HxWx3 / HxWx4 array of any numeric dtype -> an 8-bit L, RGB or RGBA PIL image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        hint = " (channels go last: HxWxC, not CxHxW)" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise EmotionError(f"an image array must be HxW, HxWx3 or HxWx4, not shape {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EmotionError(f"the image array is empty (shape {arr.shape}): send an image with pixels")
    check_size(arr.shape[1], arr.shape[0])
    arr = np.ascontiguousarray(_to_uint8(arr))
    return Image.fromarray(arr)  # uint8 HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scales pixel values to 0..255 by what the dtype and range say they mean."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        top = float(arr.max(initial=0))
        # Wider ints holding 8-bit values (np.asarray(img, int)) stay; 16-bit values (Pillow's "I" mode) scale.
        gain = 1.0 if top <= 255 else 1 / 257.0 if top <= 65535 else 255.0 / top
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0.0))
        # The two conventions: [0, 1] (skimage, torchvision) and [0, 255] (np.asarray(img, float)).
        gain = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
    else:
        raise EmotionError(f"cannot use an image array of dtype {arr.dtype}: send uint8, uint16 or float pixels")
    return np.clip(arr.astype(np.float64) * gain + 0.5, 0, 255).astype(np.uint8)
