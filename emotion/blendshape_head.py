"""A linear read-out of face geometry added to one class's logit: the model's second look at contempt (issue #21).

Contempt is a one-sided mouth: a lip corner tightened, pressed or raised on one side only. At 48 px gray the
classifier sees it on about a third of wild contempt faces at the FER+ operating point; MediaPipe Face Landmarker's
blendshapes, read at 256 px, measure each mouth corner on its own. The head adds `weights . features(blendshapes)` to
one label's logit, where the features are each left/right pair's max, min and absolute difference (asymmetry) and
the unpaired mouth shapes as they are. Mirrored faces give the same features, as the classifier's flip average does.

Serving runs the landmarker only on faces whose label margin (its logit minus the largest other) is above -`gate`:
`gate` is the largest residual seen on the faces the head was fitted on, so below it the residual could not have
made the face that label, and the top class is the one the full computation gives (for every face whose residual
is at most `gate`). `tools/fit_blendshape_head.py` fits the weights with the classifier's margin as a fixed offset
(the head adds to the classifier's evidence, it does not re-weigh it) and refits the logit biases served with it:
the head carries them (`logit_bias`), and they replace the model's own on every face while the head is on. The
model's `logit_bias` stays what suits it without the head (the browser's live mode, `blendshape_head=False`).
Light on purpose: no MediaPipe import here (the landmarker comes from `emotion.action_units`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .errors import EmotionError

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
FEATURES = tuple(f"{base}_{kind}" for base in PAIRS for kind in ("max", "min", "asym")) + SINGLES
ReadFn = Callable[[object, list], list]  # Predictor.read_action_units: (image, boxes) -> [FaceActionUnits]


def features(blendshapes: dict[str, float], names: Sequence[str] = FEATURES) -> list[float]:
    """The named features of one face's blendshapes: `<pair>_max`, `<pair>_min`, `<pair>_asym` (|left - right|)
    for a left/right pair of PAIRS, or a single blendshape's score."""
    out = []
    for name in names:
        base, _, kind = name.rpartition("_")
        if base in PAIRS:
            left, right = (float(blendshapes[n]) for n in PAIRS[base])
            out.append({"max": max(left, right), "min": min(left, right), "asym": abs(left - right)}[kind])
        else:
            out.append(float(blendshapes[name]))
    return out


@dataclass(frozen=True)
class BlendshapeHead:
    """`weights` (feature name -> weight) read out of a face's blendshapes, added to `label`'s logit on faces whose
    `label` margin is above -`gate`; `logit_bias` is served with it instead of the model's own."""

    label: str
    weights: dict[str, float]
    gate: float
    logit_bias: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict, labels: Sequence[str]) -> "BlendshapeHead":
        """The head of a model's config.json (`emotion.blendshape_head`), checked against the model's labels."""
        if not isinstance(config, dict) or set(config) != {"label", "weights", "gate", "logit_bias"}:
            raise EmotionError(f"blendshape_head needs exactly label, weights, gate and logit_bias, not {config!r}: "
                               "refit it with tools/fit_blendshape_head.py or remove it")
        label, weights, gate, bias = config["label"], config["weights"], config["gate"], config["logit_bias"]
        if label not in labels:
            raise EmotionError(f"blendshape_head's label {label!r} is not a label of this model ({', '.join(labels)})")
        if not isinstance(weights, dict) or not weights:
            raise EmotionError("blendshape_head's weights must map feature names to numbers")
        unknown = sorted(set(weights) - set(FEATURES))
        if unknown:
            raise EmotionError(f"blendshape_head names unknown features {', '.join(unknown)}: the features are "
                               "<pair>_max/_min/_asym and single blendshapes (emotion.blendshape_head.FEATURES)")
        if not all(_finite(w) for w in weights.values()) or not (_finite(gate) and gate >= 0):
            raise EmotionError("blendshape_head's weights and gate must be finite numbers, the gate >= 0")
        if not isinstance(bias, dict) or set(bias) - set(labels) or not all(_finite(b) for b in bias.values()):
            raise EmotionError(f"blendshape_head's logit_bias must map labels of this model to numbers, not {bias!r}")
        return cls(label, {k: float(v) for k, v in weights.items()}, float(gate),
                   {k: float(v) for k, v in bias.items()})

    def as_dict(self) -> dict:
        return {"label": self.label, "weights": dict(self.weights), "gate": self.gate,
                "logit_bias": dict(self.logit_bias)}

    def residual(self, blendshapes: dict[str, float]) -> float:
        """What this face's geometry adds to the label's logit."""
        return sum(w * x for w, x in zip(self.weights.values(), features(blendshapes, list(self.weights))))

    def gated(self, logits: torch.Tensor, labels: Sequence[str], model_bias: dict[str, float] | None = None
              ) -> tuple[torch.Tensor, list[int]]:
        """`logits` (N, classes), which include the model's `model_bias`, with the head's `logit_bias` instead, and
        the rows whose label margin passes the gate there (the faces the landmarker reads)."""
        labels, model_bias = list(labels), model_bias or {}
        shift = torch.tensor([self.logit_bias.get(k, 0.0) - model_bias.get(k, 0.0) for k in labels],
                             dtype=logits.dtype)
        out = logits + shift
        c = labels.index(self.label)
        others = torch.cat([out[:, :c], out[:, c + 1:]], dim=1).max(dim=1).values
        return out, torch.nonzero(out[:, c] - others > -self.gate).flatten().tolist()

    def apply(self, logits: torch.Tensor, crops: Sequence, labels: Sequence[str], read: ReadFn,
              model_bias: dict[str, float] | None = None) -> torch.Tensor:
        """`logits` (N, classes) of `crops`, which include the model's `model_bias`, with the head's `logit_bias`
        instead, and the residual added where the gate lets it change the answer; a crop the landmarker cannot read
        (too small, no face found) gets no residual."""
        out, rows = self.gated(logits, labels, model_bias)
        c = list(labels).index(self.label)
        for i in rows:
            crop = crops[i]
            found = read(crop, [(0, 0, crop.width, crop.height)])[0]
            if found.blendshapes is not None:
                out[i, c] += self.residual(found.blendshapes)
        return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
