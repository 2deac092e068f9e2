"""A linear read-out of face geometry added to one class's logit: the model's second look at contempt (issue #21).

Contempt is a one-sided mouth: a lip corner tightened, pressed or raised on one side only. At 48 px gray the
classifier sees it on about a third of wild contempt faces at the FER+ operating point; MediaPipe Face Landmarker,
run at 256 px, measures each mouth corner on its own. The head adds `weights . (features - centre)` to one label's
logit. The features are of two kinds: the landmarker's blendshapes (each left/right pair's max, min and absolute
difference, and the unpaired shapes as they are) and the mouth's asymmetry measured on its landmarks
(`emotion.face_geometry`, names `lm<i>_<j>_<axis>`). `centre` (0 where absent) is a typical face of the other
labels, so a face the landmarker cannot read gets what a typical face gets: nothing. Mirrored faces give the same
features, as the classifier's flip average does.

Serving runs the landmarker only on faces whose label margin (its logit minus the largest other) is above -`gate`.
For every face whose residual is at most `gate`, the top class is then the one the full computation gives: below
the gate the residual could not have made the face that label. `gate` is a high quantile of the residuals on the
faces the head was fitted on (the 98th for the shipped head: the largest would send 58% of FER+ validation faces
to the landmarker instead of 10.5%, for the same accuracy on every validation report; docs/research/transfer.md).
`tools/fit_blendshape_head.py` fits the weights with the classifier's margin as a fixed offset (the head adds to the
classifier's evidence, it does not re-weigh it) and refits the logit biases served with it:
the head carries them (`logit_bias`), and they replace the model's own on every face while the head is on. The
model's `logit_bias` stays what suits it without the head (the browser's live mode, `blendshape_head=False`).
Light on purpose: no MediaPipe import here (the landmarker comes from `emotion.action_units`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import EmotionError
from .face_geometry import GEOMETRY, asymmetry

# MediaPipe Face Landmarker's 52 blendshape names (ARKit's shapes plus "_neutral"), in the model's order.
BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
# Left/right pairs by the name their features carry; mouthLeft/Right and jawLeft/Right (moved sideways) are "...Shift".
SIDEWAYS = {"mouthLeft": "mouthShift", "jawLeft": "jawShift"}
PAIRS = {SIDEWAYS.get(n, n[:-4]): (n, n[:-4] + "Right")
         for n in BLENDSHAPES if n.endswith("Left") and n[:-4] + "Right" in BLENDSHAPES}
SINGLES = tuple(n for n in BLENDSHAPES if not any(n in pair for pair in PAIRS.values()))
BLENDSHAPE_FEATURES = tuple(f"{base}_{kind}" for base in PAIRS for kind in ("max", "min", "asym")) + SINGLES
FEATURES = BLENDSHAPE_FEATURES + GEOMETRY
ReadFn = Callable[[object, list], list]  # Predictor.read_action_units: (image, boxes) -> [FaceActionUnits]


def features(blendshapes: dict[str, float], names: Sequence[str] = FEATURES, landmarks=None) -> list[float]:
    """The named features of one face: from its blendshapes, `<pair>_max`, `<pair>_min`, `<pair>_asym`
    (|left - right|) for a left/right pair of PAIRS, or a single blendshape's score; from its landmarks (478, 3),
    the mouth asymmetries of `emotion.face_geometry.GEOMETRY`."""
    geometry = None
    if any(name in GEOMETRY for name in names):
        if landmarks is None:
            raise EmotionError("these features need the face's landmarks (emotion.face_geometry), and none were given")
        geometry = asymmetry(landmarks)
    out = []
    for name in names:
        base, _, kind = name.rpartition("_")
        if geometry is not None and name in geometry:
            out.append(geometry[name])
        elif base in PAIRS:
            left, right = (float(blendshapes[n]) for n in PAIRS[base])
            out.append({"max": max(left, right), "min": min(left, right), "asym": abs(left - right)}[kind])
        else:
            out.append(float(blendshapes[name]))
    return out


@dataclass(frozen=True)
class BlendshapeHead:
    """`weights` (feature name -> weight) read out of a face's features minus `centre`, added to `label`'s logit on
    faces whose `label` margin is above -`gate`; `logit_bias` is served with it instead of the model's own."""

    label: str
    weights: dict[str, float]
    gate: float
    logit_bias: dict[str, float] = field(default_factory=dict)
    centre: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict, labels: Sequence[str]) -> "BlendshapeHead":
        """The head of a model's config.json (`emotion.blendshape_head`), checked against the model's labels."""
        keys = {"label", "weights", "gate", "logit_bias"}
        if not isinstance(config, dict) or not keys <= set(config) <= keys | {"centre"}:
            raise EmotionError(f"blendshape_head needs label, weights, gate and logit_bias (and may have centre), not "
                               f"{config!r}: refit it with tools/fit_blendshape_head.py or remove it")
        label, weights, gate, bias = config["label"], config["weights"], config["gate"], config["logit_bias"]
        if label not in labels:
            raise EmotionError(f"blendshape_head's label {label!r} is not a label of this model ({', '.join(labels)})")
        if not isinstance(weights, dict) or not weights:
            raise EmotionError("blendshape_head's weights must map feature names to numbers")
        unknown = sorted(set(weights) - set(FEATURES))
        if unknown:
            raise EmotionError(f"blendshape_head names unknown features {', '.join(unknown)}: the features are "
                               "<pair>_max/_min/_asym, single blendshapes and the landmarks' lm<i>_<j>_<axis> "
                               "(emotion.blendshape_head.FEATURES)")
        if not all(_finite(w) for w in weights.values()) or not (_finite(gate) and gate >= 0):
            raise EmotionError("blendshape_head's weights and gate must be finite numbers, the gate >= 0")
        if not isinstance(bias, dict) or set(bias) - set(labels) or not all(_finite(b) for b in bias.values()):
            raise EmotionError(f"blendshape_head's logit_bias must map labels of this model to numbers, not {bias!r}")
        centre = config.get("centre", {})
        if not isinstance(centre, dict) or set(centre) - set(weights) or not all(_finite(c) for c in centre.values()):
            raise EmotionError(f"blendshape_head's centre must map some of its weights' features to numbers, not "
                               f"{centre!r}")
        return cls(label, {k: float(v) for k, v in weights.items()}, float(gate),
                   {k: float(v) for k, v in bias.items()}, {k: float(v) for k, v in centre.items()})

    def as_dict(self) -> dict:
        out = {"label": self.label, "weights": dict(self.weights), "gate": self.gate,
               "logit_bias": dict(self.logit_bias)}
        if self.centre:
            out["centre"] = dict(self.centre)
        return out

    @property
    def landmark_features(self) -> tuple[str, ...]:
        """The features it reads from the landmarks (the mouth's asymmetry, emotion.face_geometry), not blendshapes."""
        return tuple(name for name in self.weights if name in GEOMETRY)

    @property
    def needs_landmarks(self) -> bool:
        """Whether the head reads the mouth's asymmetry from the landmarks (not only the blendshapes)."""
        return bool(self.landmark_features)

    def residual(self, blendshapes: dict[str, float], landmarks=None) -> float:
        """What this face's geometry adds to the label's logit."""
        values = features(blendshapes, list(self.weights), landmarks)
        return sum(w * (x - self.centre.get(n, 0.0)) for (n, w), x in zip(self.weights.items(), values))

    def gated(self, logits: np.ndarray, labels: Sequence[str], model_bias: dict[str, float] | None = None
              ) -> tuple[np.ndarray, list[int]]:
        """`logits` (N, classes), which include the model's `model_bias`, with the head's `logit_bias` instead (a
        new float array, of `logits`' precision), and the rows whose label margin passes the gate there (the faces
        the landmarker reads)."""
        logits = np.asarray(logits)
        logits = logits if logits.dtype.kind == "f" else logits.astype(np.float32)
        labels, model_bias = list(labels), model_bias or {}
        shift = np.array([self.logit_bias.get(k, 0.0) - model_bias.get(k, 0.0) for k in labels], logits.dtype)
        out = logits + shift
        c = labels.index(self.label)
        others = np.delete(out, c, axis=1).max(axis=1)
        return out, np.flatnonzero(out[:, c] - others > -self.gate).tolist()

    def apply(self, logits: np.ndarray, crops: Sequence, labels: Sequence[str], read: ReadFn,
              model_bias: dict[str, float] | None = None) -> np.ndarray:
        """`logits` (N, classes) of `crops`, which include the model's `model_bias`, with the head's `logit_bias`
        instead, and the residual added where the gate lets it change the answer; a crop the landmarker cannot read
        (too small, no face found, degenerate landmarks) gets no residual."""
        out, rows = self.gated(logits, labels, model_bias)
        c, needs_landmarks = list(labels).index(self.label), self.needs_landmarks
        for i in rows:
            crop = crops[i]
            found = read(crop, [(0, 0, crop.width, crop.height)])[0]
            if found.blendshapes is None or (found.landmarks is None and needs_landmarks):
                continue
            try:
                out[i, c] += self.residual(found.blendshapes, found.landmarks)
            except ValueError:  # landmarks that are not a face (no extent, not finite): no reading, as no face
                continue
        return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
