"""One face, one shape: `FacePrediction` is what every path passes on (photo, batch, video, webcam), and this module
is the one place that writes it out: as a JSON dict (REST, CLI --json, the webcam), a predict-dataset parquet row,
and a video table row (CSV and parquet); and a track's summary.

The REST schema is built from `FACE_JSON` and `IMAGE_JSON` (webapp/api.py), so a field added here is documented
there without being spelled again. Nothing here imports torch: pyarrow only where a parquet schema is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from typing_extensions import TypedDict  # pydantic (the REST schema) needs this one below Python 3.12

from .action_units import AU_TABLE

BOX_KEYS = ("x", "y", "w", "h")
# The table columns of the action units, asked for only: "AU12" -> "au_12".
AU_COLUMNS = {au: f"au_{au[2:]}" for au in AU_TABLE}


@dataclass
class FacePrediction:
    """One face: where it is and what the model thinks. `box` is (x, y, w, h) in original-image pixels.

    `detection_score` and `keypoints` are None for a box the caller gave; `track` is the face's track id along a
    video or a webcam session (None for a photo)."""

    box: tuple[int, int, int, int]
    emotion: str
    confidence: float
    uncertain: bool
    probabilities: dict[str, float]
    detection_score: float | None = None
    keypoints: list[tuple[float, float]] | None = None
    track: int | None = None
    # Asked for only (`action_units=True`): the AUs (AU_TABLE's, 0..1) and the landmarker's 52 blendshapes, or
    # None for both with `action_units_reason`. All three None: not asked, and left out of every output.
    action_units: dict[str, float] | None = None
    blendshapes: dict[str, float] | None = None
    action_units_reason: str | None = None

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, labels: Sequence[str], uncertain_below: float, box,
                           score=None, keypoints=None, track: int | None = None) -> "FacePrediction":
        """The prediction for one face from its probabilities over `labels`: the top one, its confidence, and
        `uncertain` when that confidence is below `uncertain_below` (the model's threshold)."""
        top = int(probs.argmax())
        return cls(box=tuple(int(v) for v in box), emotion=labels[top], confidence=float(probs[top]),
                   uncertain=bool(probs[top] < uncertain_below),
                   probabilities={lab: float(p) for lab, p in zip(labels, probs)},
                   detection_score=None if score is None else float(score),
                   keypoints=None if keypoints is None else [tuple(map(float, k)) for k in keypoints], track=track)

    def with_probabilities(self, probs: np.ndarray, track: int | None = None,
                           uncertain_below: float | None = None) -> "FacePrediction":
        """This face with other probabilities (smoothed along its track): the top emotion and confidence follow
        them; `uncertain` too when `uncertain_below` is given, else it stays as it was."""
        labels = list(self.probabilities)
        top = int(probs.argmax())
        uncertain = self.uncertain if uncertain_below is None else bool(probs[top] < uncertain_below)
        return replace(self, emotion=labels[top], confidence=float(probs[top]), uncertain=uncertain,
                       probabilities={lab: float(p) for lab, p in zip(labels, probs)},
                       track=self.track if track is None else track)

    def with_action_units(self, read) -> "FacePrediction":
        """This face with what `emotion.action_units.ActionUnitReader` read on it (a `FaceActionUnits`)."""
        return replace(self, action_units=read.action_units, blendshapes=read.blendshapes,
                       action_units_reason=read.reason)

    def scaled(self, sx: float, sy: float) -> "FacePrediction":
        """This face in an image `sx` x `sy` times the size of the one it was found in (a photo decoded at a
        reduced scale, mapped back to the file's pixels)."""
        if (sx, sy) == (1.0, 1.0):
            return self
        x, y, w, h = self.box
        box = (round(x * sx), round(y * sy), round(w * sx), round(h * sy))
        keypoints = None if self.keypoints is None else [(px * sx, py * sy) for px, py in self.keypoints]
        return replace(self, box=box, keypoints=keypoints)

    @property
    def has_action_units(self) -> bool:
        """Action units were asked for this face (read, or refused with a reason)."""
        return self.action_units is not None or self.action_units_reason is not None

    def vector(self) -> np.ndarray:
        """The probabilities as an array, in the model's label order."""
        return np.fromiter(self.probabilities.values(), float, len(self.probabilities))

    def to_dict(self) -> dict[str, Any]:
        return face_json(self)


@dataclass
class ImagePrediction:
    """The faces kept (at most `max_faces`, left to right) and `faces_total`, the number found before that cut."""

    faces: list[FacePrediction]
    image_size: tuple[int, int]  # width, height
    timings_ms: dict[str, float] = field(default_factory=dict)
    faces_total: int | None = None  # None: as many as `faces`

    def __post_init__(self):
        if self.faces_total is None:
            self.faces_total = len(self.faces)

    @property
    def truncated(self) -> bool:
        """More faces were found than `max_faces` allowed; `faces` holds the highest-scoring ones."""
        return self.faces_total > len(self.faces)

    def to_dict(self) -> dict[str, Any]:
        return image_json(self)


# ------------------------------------------------------------------------------------------------------------- JSON
class Box(TypedDict):
    """A face box in JSON: pixels of the original image."""

    x: int
    y: int
    w: int
    h: int


# name -> (type, description); the order is the JSON's. A field whose type allows None is written as null, except
# `track`, which a photo's face leaves out (the REST photo schema has no track), and the three action-unit fields,
# written only when they were asked for (ACTION_UNIT_FIELDS).
FACE_JSON: dict[str, tuple[Any, str]] = {
    "box": (Box, "in pixels of the original (EXIF-rotated) image"),
    "emotion": (str, "the most likely emotion"),
    "confidence": (float, "its probability"),
    "uncertain": (bool, "the top probability is below the model's uncertain_threshold"),
    "probabilities": (dict[str, float], "all 8 emotions, summing to 1"),
    "detection_score": (float | None, "null for a caller-given crop box"),
    "keypoints": (list[list[float]] | None, "eyes, nose, mouth, ears (x, y)"),
    "track": (int | None, "the face's track along a video or webcam session; absent for a photo"),
    "action_units": (dict[str, float] | None, "only with action_units=true: FACS action units (AU1, AU2, AU4, ...) "
                     "in 0..1 from the face landmarker's blendshapes (docs/action_units.md); null with a reason "
                     "when none could be read"),
    "blendshapes": (dict[str, float] | None, "only with action_units=true: the landmarker's 52 blendshape scores "
                    "in 0..1, or null"),
    "action_units_reason": (str | None, "only with action_units=true: why action_units is null (a face too small "
                            "for landmarks, no landmarks found), else null"),
}
ACTION_UNIT_FIELDS = ("action_units", "blendshapes", "action_units_reason")
IMAGE_JSON: dict[str, tuple[Any, str]] = {
    "faces": (list, "every face kept, left to right"),
    "faces_total": (int, "faces found before the max_faces cut"),
    "truncated": (bool, "true when max_faces cut the answer: faces holds the highest-scoring ones"),
    "image_size": (dict[str, int], "width and height in pixels"),
    "timings_ms": (dict[str, float], "milliseconds per step"),
}


def face_json(face: FacePrediction) -> dict[str, Any]:
    """A face as JSON (`FACE_JSON`'s fields in its order; `track` only when it has one)."""
    out = {"box": dict(zip(BOX_KEYS, face.box)), "emotion": face.emotion, "confidence": face.confidence,
           "uncertain": face.uncertain, "probabilities": dict(face.probabilities),
           "detection_score": face.detection_score,
           "keypoints": None if face.keypoints is None else [tuple(k) for k in face.keypoints]}
    if face.track is not None:
        out["track"] = face.track
    if face.has_action_units:
        out.update(action_units=face.action_units, blendshapes=face.blendshapes,
                   action_units_reason=face.action_units_reason)
    return out


def image_json(result: ImagePrediction) -> dict[str, Any]:
    """An image's answer as JSON (`IMAGE_JSON`'s fields); timings rounded to 0.01 ms."""
    return {"faces": [face_json(f) for f in result.faces], "faces_total": result.faces_total,
            "truncated": result.truncated,
            "image_size": {"width": result.image_size[0], "height": result.image_size[1]},
            "timings_ms": {k: round(v, 2) for k, v in result.timings_ms.items()}}


# ------------------------------------------------------------------------------------------ predict-dataset rows
def dataset_schema(labels: Sequence[str], action_units: bool = False):
    """The columns of every predict-dataset shard: where each face is, its probabilities, the top emotion, with
    `action_units` the AUs (au_1, au_2, au_4, ...) and why they are null, and any error."""
    import pyarrow as pa

    i32, f32 = pa.int32(), pa.float32()
    aus = [(c, f32) for c in AU_COLUMNS.values()] + [("action_units_reason", pa.string())] if action_units else []
    return pa.schema(
        [("image_id", pa.string()), ("face_index", i32), ("num_faces", i32), ("image_width", i32),
         ("image_height", i32), ("box_x", i32), ("box_y", i32), ("box_w", i32), ("box_h", i32),
         ("detection_score", f32), ("emotion", pa.string()), ("confidence", f32), ("uncertain", pa.bool_())]
        + [(f"prob_{label}", f32) for label in labels] + aus + [("error", pa.string())])


def dataset_rows(image_id: str, result: ImagePrediction) -> list[dict[str, Any]]:
    """One row per face of one image; an image without a face is one row with a null face_index."""
    base = {"image_id": image_id, "num_faces": len(result.faces), "image_width": result.image_size[0],
            "image_height": result.image_size[1]}
    if not result.faces:
        return [base]
    return [{**base, "face_index": i, **{f"box_{k}": v for k, v in zip(BOX_KEYS, f.box)},
             "detection_score": f.detection_score, "emotion": f.emotion, "confidence": f.confidence,
             "uncertain": f.uncertain, **{f"prob_{k}": v for k, v in f.probabilities.items()}, **au_cells(f)}
            for i, f in enumerate(result.faces)]


def au_cells(face: FacePrediction, digits: int | None = None) -> dict[str, Any]:
    """A face's action units as table cells (au_1, ..., action_units_reason), rounded to `digits` if given; none
    when they were not asked for, all null but the reason when none could be read."""
    if not face.has_action_units:
        return {}
    aus = face.action_units or {}
    cells = {col: (None if aus.get(au) is None else aus[au] if digits is None else round(aus[au], digits))
             for au, col in AU_COLUMNS.items()}
    return {**cells, "action_units_reason": face.action_units_reason}


def dataset_error_row(image_id: str, message: str) -> dict[str, Any]:
    """The one row of an image that could not be read or predicted."""
    return {"image_id": image_id, "error": message}


# ------------------------------------------------------------------------------------------------------ video rows
def video_columns(labels: Sequence[str], action_units: bool = False) -> list[str]:
    """The video table's columns (CSV and parquet): time_s, frame, track, x, y, w, h, emotion, confidence, the
    probabilities, and with `action_units` the AUs (au_1, au_2, ...; smoothed along the track) and their reason."""
    aus = [*AU_COLUMNS.values(), "action_units_reason"] if action_units else []
    return ["time_s", "frame", "track", *BOX_KEYS, "emotion", "confidence", *labels, *aus]


def video_row(time: float, frame: int, face: FacePrediction) -> dict[str, Any]:
    """One face of one sampled frame (smoothed along its track), rounded for the table: 1 ms, 4 decimals."""
    return {"time_s": round(time, 3), "frame": frame, "track": face.track, **dict(zip(BOX_KEYS, face.box)),
            "emotion": face.emotion, "confidence": round(face.confidence, 4),
            **{lab: round(p, 4) for lab, p in face.probabilities.items()}, **au_cells(face, 4)}


def track_summary(track, labels: Sequence[str]) -> dict[str, Any]:
    """One track (`emotion.tracking.Track`): when it was seen, in how many frames, its mean probabilities and
    their top emotion."""
    mean = track.total / max(1, track.frames)
    top = int(mean.argmax())
    return {"track": track.id, "first_s": round(track.first, 3), "last_s": round(track.last, 3),
            "frames": track.frames, "emotion": labels[top],
            "mean_probabilities": {lab: round(float(p), 4) for lab, p in zip(labels, mean)}}
