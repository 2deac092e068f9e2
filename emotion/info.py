"""A model's facts (labels, input size, mean/std, crop framing, temperature, ...): what serving needs to know about
it, read from and written to its config.json. Light on purpose: serving, preprocessing and face cropping import it
without pulling in torch, timm or safetensors.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import EmotionError
from .labels import LABELS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"  # the ONNX export beside the weights (emotion.onnx_export)
INT8_NAME = "model.int8.onnx"  # the same graph quantized to int8 from calibration faces (emotion.quantize)


@dataclass
class ModelInfo:
    """What serving needs to know about a model, read from (and written to) its config.json.

    The defaults here are the project's only defaults for these facts: the trainer's config and `crop_face` read them.
    """

    architecture: str
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    input_size: tuple[int, int, int] = (1, 48, 48)  # channels, height, width
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    interpolation: str = "bilinear"
    native_size: int = 48  # crops go through this size first: what the training faces were stored at
    # How serving frames a detected face so it looks like the training faces. For FER2013 (measured with BlazeFace
    # on 843 validation faces: the box is ~0.85 of the frame, centred ~0.1 box below it): margin 0.1, offset -0.1.
    crop_margin: float = 0.1  # added on each side of the detector's box, as a fraction of the box size
    crop_offset_y: float = -0.1  # crop centre moved by this fraction of the box size (negative = up)
    align_eyes: bool = True  # rotate the crop so the eyes are level
    temperature: float = 1.0  # softmax(logits / T), fitted on validation
    uncertain_threshold: float = 0.5  # a top probability below this is flagged `uncertain`
    tta_flip: bool = True  # average with the horizontally flipped face (better on validation for every shipped model)
    # With tta_flip: average in the mirror only for faces whose two highest logits (after logit_bias) are closer than
    # this; a clear answer is served from the face alone (emotion.calibration.served_logits). None: every face.
    flip_margin: float | None = None
    # Added to the logits before the temperature, by label (e.g. {"neutral": -0.6}): a prior fitted after training
    # on the validation mix, so that subtle expressions are not all read as neutral (see the model card).
    logit_bias: dict[str, float] = field(default_factory=dict)
    # A linear read-out of the face's blendshapes added to one label's logit (emotion/blendshape_head.py): label,
    # weights by feature name, gate. Empty: none, and the landmarker never loads for classification.
    blendshape_head: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(self.input_size) != 3 or self.input_size[0] not in (1, 3):
            raise EmotionError(f"input_size must be (channels, height, width) with 1 or 3 channels, not {self.input_size}")
        if len(self.mean) != self.input_size[0] or len(self.std) != self.input_size[0]:
            raise EmotionError(f"mean/std need {self.input_size[0]} values each, got {self.mean} / {self.std}")
        if self.temperature <= 0:
            raise EmotionError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.uncertain_threshold <= 1:
            raise EmotionError(f"uncertain_threshold must be in [0, 1], got {self.uncertain_threshold}")
        if self.flip_margin is not None:
            if isinstance(self.flip_margin, bool) or not isinstance(self.flip_margin, (int, float)) \
                    or not self.flip_margin >= 0:
                raise EmotionError(f"flip_margin must be a number >= 0 or null, got {self.flip_margin!r}")
            self.flip_margin = float(self.flip_margin)
        if self.crop_margin < 0:
            raise EmotionError(f"crop_margin must be >= 0, got {self.crop_margin}")
        unknown = sorted(set(self.logit_bias) - set(self.labels))
        if unknown:
            raise EmotionError(f"logit_bias names {', '.join(unknown)}, which are not labels of this model")
        self.logit_bias = {k: float(v) for k, v in self.logit_bias.items()}
        if self.blendshape_head:
            from .blendshape_head import BlendshapeHead

            self.blendshape_head = BlendshapeHead.from_dict(self.blendshape_head, self.labels).as_dict()

    def head(self):
        """The `BlendshapeHead` of `blendshape_head`, or None when the model has none."""
        if not self.blendshape_head:
            return None
        from .blendshape_head import BlendshapeHead

        return BlendshapeHead.from_dict(self.blendshape_head, self.labels)

    def bias_vector(self) -> np.ndarray | None:
        """`logit_bias` as a (num_classes,) float32 array in label order, or None when there is none."""
        if not any(self.logit_bias.values()):
            return None
        return np.array([self.logit_bias.get(lab, 0.0) for lab in self.labels], np.float32)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_config(self, pretrained_cfg: dict | None = None, **extra) -> dict:
        """config.json in timm's Hub format (what timm, transformers' TimmWrapper and our loader all read)."""
        cfg = dict(pretrained_cfg or {})
        cfg.update(input_size=list(self.input_size), mean=list(self.mean), std=list(self.std),
                   interpolation=self.interpolation, num_classes=self.num_classes, crop_pct=1.0, crop_mode="center")
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        facts = {k: v for k, v in asdict(self).items() if k not in ("architecture", "labels", "input_size", "mean",
                                                                      "std", "interpolation")}
        return {"architecture": self.architecture, "num_classes": self.num_classes,
                "num_features": extra.pop("num_features", None), "label_names": list(self.labels),
                "pretrained_cfg": cfg, "emotion": facts, **extra}

    @classmethod
    def from_config(cls, config: dict) -> "ModelInfo":
        try:
            pcfg = config.get("pretrained_cfg", {})
            return cls(architecture=config["architecture"], labels=list(config["label_names"]),
                       input_size=pcfg["input_size"], mean=pcfg["mean"], std=pcfg["std"],
                       interpolation=pcfg.get("interpolation", "bilinear"), **config.get("emotion", {}))
        except (KeyError, TypeError) as e:
            raise EmotionError(f"config.json is missing or has a bad field ({e}); it needs architecture, label_names "
                               "and pretrained_cfg with input_size, mean and std") from None

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ModelInfo":
        """The facts in an exported model folder's config.json (what serving reads; the weights stay unread)."""
        path = Path(folder) / CONFIG_NAME
        try:
            return cls.from_config(json.loads(path.read_text()))
        except (OSError, ValueError, AttributeError) as e:
            raise EmotionError(f"{path} cannot be read as a model's config.json ({e}): point at a folder "
                               "the trainer exported (config.json beside model.safetensors)") from None


def default(name: str):
    """ModelInfo's default for the fact `name`: the one place the trainer's config and `crop_face` take it from."""
    f = next(f for f in fields(ModelInfo) if f.name == name)
    return f.default_factory() if callable(f.default_factory) else f.default
