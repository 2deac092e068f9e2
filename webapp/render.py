"""Drawing a prediction for people: boxes and "emotion 87%" chips on the photo, and a one-line summary."""
from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

from emotion.images import file_pixels

# One colour per emotion, the same in the annotated image and the charts.
COLOURS = {"anger": "#e53935", "contempt": "#8e24aa", "disgust": "#43a047", "fear": "#5e35b1",
           "happy": "#fbc02d", "neutral": "#78909c", "sad": "#1e88e5", "surprise": "#fb8c00"}
OTHER = "#9e9e9e"
PREVIEW_MAX_SIDE = 1600  # the UI's images are at most ~500 px tall; a 40 MP photo need not be re-encoded whole
# Chips are sized for the smallest display: a 390 px phone shows the image ~320 px wide, where a font of 1/27 of the
# image's longer side is still 12 px. A chip much wider than its face (a crowd) keeps only the face's number.
FONT_FRACTION = 1 / 27
# The AUs this landmarker cannot show (measured, docs/action_units.md): drawn grey on the charts, with a footnote.
AU_CAVEATS = {"AU6": "always 0 with this model", "AU9": "always 0 with this model",
              "AU24": "unreliable: as high on smiles as on anger"}
AU_NOTE = ("Action units come from the face landmarker's blendshapes, not certified FACS coding. Grey bars: AU6 (cheek "
           "raiser) and AU9 (nose wrinkler) are always 0 with this model; AU24 (lip presser) does not separate anger "
           "from happy. See docs/action_units.md.")
AU_TOP = 3  # action units named per face in the summary
NO_FACE = ("**No face found.** Try a larger or more frontal face, lower the minimum detection score, or "
           "draw the crop yourself in the **Crop a face** tab.")


def colour(emotion: str) -> str:
    return COLOURS.get(emotion, OTHER)


def caption(face: dict[str, Any]) -> str:
    """'happy 87%', or 'happy? 41%' when the model is unsure."""
    mark = "?" if face["uncertain"] else ""
    return f"{face['emotion']}{mark} {face['confidence']:.0%}"


def annotate(image: Image.Image, faces: list[dict[str, Any]]) -> Image.Image:
    """A copy of `image` with a box and a numbered caption chip per face ("2 happy 87%" is the "Face 2" card).

    A face's `number` is its number on the chip when given, else its place in `faces` (from 1)."""
    out = image.convert("RGB")  # always a copy: convert() on an RGB image copies too
    draw = ImageDraw.Draw(out)
    side = max(out.size)
    line = max(2, round(side / 300))
    font = ImageFont.load_default(size=max(12, round(side * FONT_FRACTION)))
    for number, face in enumerate(faces, 1):
        b = face["box"]
        x0, y0, x1, y1 = b["x"], b["y"], b["x"] + b["w"] - 1, b["y"] + b["h"] - 1
        fill = colour(face["emotion"])
        draw.rectangle((x0, y0, x1, y1), outline=fill, width=line)
        text = f"{face.get('number', number)} {caption(face)}"  # a video's faces carry their track's number
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left > 2 * b["w"]:  # a crowd of small faces: the number, read on its card
            text = str(face.get("number", number))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, line)
        chip_h = bottom - top + 2 * pad
        # Above the box; below it when it touches the top edge; inside it when it fills the image.
        cy = y0 - chip_h if y0 >= chip_h else y1 + 1 if y1 + 1 + chip_h <= out.height else y0
        cx = min(x0, max(0, out.width - (right - left) - 2 * pad))
        draw.rectangle((cx, cy, cx + right - left + 2 * pad, cy + chip_h), fill=fill)
        draw.text((cx + pad - left, cy + pad - top), text, fill=_ink(fill), font=font)
    return out


def preview(image: Image.Image, faces: list[dict[str, Any]], max_side: int = PREVIEW_MAX_SIDE) -> Image.Image:
    """`annotate` on a copy at most `max_side` px a side: what a browser shows, without a full-size copy + PNG.

    The faces' boxes are in the file's pixels; `image` may have been decoded smaller (a large JPEG at 1/2, 1/4 or
    1/8 scale: `emotion.images.file_pixels`), and is never enlarged for the preview."""
    (width, height), _ = file_pixels(image)
    scale = min(1.0, max_side / max(width, height), max(image.size) / max(width, height))
    if scale == 1.0:
        return annotate(image, faces)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image if image.size == size else image.resize(size, Image.BOX)
    scaled = [{**face, "box": {k: round(v * scale) for k, v in face["box"].items()}} for face in faces]
    return annotate(small, scaled)


def _ink(hex_colour: str) -> str:
    """Black or white text, whichever reads better on the chip."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def summary(result: dict[str, Any] | None, no_face: str = NO_FACE, listed: bool = False) -> str:
    """Markdown for the faces found: each one's emotion and confidence, uncertain ones marked as such.

    `listed`: a table lists a group's faces beside it (the photo tab), so only the count line is written for two
    faces or more."""
    if not result:
        return ""
    faces = result["faces"]
    if not faces:
        return no_face
    lines = [f"**{len(faces)} face{'s' if len(faces) != 1 else ''}** ({result['model']['id']}, "
             f"{result['timings_ms']['total']:.0f} ms)"]
    if result.get("truncated"):
        lines[0] += (f": the {len(faces)} highest-scoring of **{result['faces_total']}** found; raise *Max faces* "
                     "to see all")
    if listed and len(faces) > 1:
        return lines[0]
    for i, face in enumerate(faces, 1):
        unsure = " *(uncertain: no emotion clearly wins)*" if face["uncertain"] else ""
        lines.append(f"- Face {i}: **{face['emotion']}** {face['confidence']:.0%}{unsure}{au_line(face)}")
    return "\n".join(lines)


FACE_TABLE_HEADERS = ["Face", "Emotion", "Confidence", "Runner-up"]


def runner_up(face: dict[str, Any]) -> str:
    """The second most likely emotion and its probability, e.g. 'neutral 9%'."""
    second = sorted(face["probabilities"].items(), key=lambda kv: kv[1], reverse=True)[1]
    return f"{second[0]} {second[1]:.0%}"


def face_rows(faces: list[dict[str, Any]]) -> list[list[Any]]:
    """One compact row per face, numbered as on the photo: [number, emotion (? when unsure), confidence, runner-up]."""
    return [[number, face["emotion"] + ("?" if face["uncertain"] else ""), f"{face['confidence']:.0%}",
             runner_up(face)] for number, face in enumerate(faces, 1)]


def face_title(number: int, face: dict[str, Any]) -> str:
    """The heading of one face's bars: 'Face 2: happy 87%', '(uncertain)' added when no emotion clearly wins."""
    return f"Face {number}: {caption(face)}" + (" (uncertain)" if face["uncertain"] else "")


def au_line(face: dict[str, Any]) -> str:
    """' · AU12 0.92, AU10 0.55, AU7 0.40' (the strongest action units), ' · no action units: <why>', or ''
    when they were not asked for."""
    if "action_units" not in face:
        return ""
    if face["action_units"] is None:
        return f" · no action units: {face.get('action_units_reason')}"
    top = sorted(face["action_units"].items(), key=lambda kv: -kv[1])[:AU_TOP]
    return " · " + ", ".join(f"{au} {v:.2f}" for au, v in top)


def au_table(face: dict[str, Any]):
    """A face's action units for a bar chart: au ("AU12"), intensity (0..1), reading ("measured", or the caveat
    of an AU this model cannot show), in AU order; None when the face has none."""
    import pandas as pd

    aus = face.get("action_units")
    if not aus:
        return None
    return pd.DataFrame({"au": list(aus), "intensity": list(aus.values()),
                         "reading": [AU_CAVEATS.get(au, "measured") for au in aus]})
