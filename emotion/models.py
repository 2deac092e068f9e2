"""Model definitions and the one loader for `hf-hub:` / `local-dir:` sources.

Both architectures are built through timm: `resnet50` (and any other timm name) is timm's own, and the small CNN is
registered with timm's model registry here, so `timm.create_model("small_cnn")` works once this module is imported.
The model's facts (labels, input size, mean/std, crop margin, temperature) live in its config.json (`ModelInfo`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .errors import EmotionError
from .labels import LABELS

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# ---------------------------------------------------------------------------------------------------------- small CNN
class SmallCNN(nn.Module):
    """A VGG-style CNN for 48-96 px faces: four stages of two 3x3 conv-BN-ReLU, max-pooling between, global average.

    About 1.2 M parameters at the default widths; designed for FER2013-like grayscale crops but takes any channel count.
    """

    def __init__(self, num_classes: int = 8, in_chans: int = 1, widths=(32, 64, 128, 256), drop_rate: float = 0.3,
                 **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        layers, c = [], in_chans
        for i, w in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _small_cnn_cfg(**kwargs) -> dict:
    return {
        "num_classes": 8, "input_size": (1, 48, 48), "pool_size": None, "crop_pct": 1.0, "crop_mode": "center",
        "interpolation": "bilinear", "mean": (0.5,), "std": (0.5,), "first_conv": "features.0", "classifier": "fc",
        "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({"small_cnn": _small_cnn_cfg()})  # read by timm's register_model


@register_model
def small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """The project's small CNN, registered with timm so that `timm.create_model('small_cnn')` builds it."""
    return build_model_with_cfg(SmallCNN, "small_cnn", pretrained, **kwargs)


# --------------------------------------------------------------------------------------------------------- model info
@dataclass
class ModelInfo:
    """What serving needs to know about a model, read from (and written to) its config.json."""

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
    tta_flip: bool = False  # average with the horizontally flipped face
    # Added to the logits before the temperature, by label (e.g. {"neutral": -0.6}): a prior fitted after training
    # on the validation mix, so that subtle expressions are not all read as neutral (see the model card).
    logit_bias: dict[str, float] = field(default_factory=dict)

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
        if self.crop_margin < 0:
            raise EmotionError(f"crop_margin must be >= 0, got {self.crop_margin}")
        unknown = sorted(set(self.logit_bias) - set(self.labels))
        if unknown:
            raise EmotionError(f"logit_bias names {', '.join(unknown)}, which are not labels of this model")
        self.logit_bias = {k: float(v) for k, v in self.logit_bias.items()}

    def bias_vector(self) -> torch.Tensor | None:
        """`logit_bias` as a (num_classes,) tensor in label order, or None when there is none."""
        if not any(self.logit_bias.values()):
            return None
        return torch.tensor([self.logit_bias.get(lab, 0.0) for lab in self.labels])

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


# ------------------------------------------------------------------------------------------------------------ loading
def create_model(architecture: str, num_classes: int = 8, in_chans: int = 1, pretrained: bool = False,
                 **kwargs) -> nn.Module:
    """Build an (untrained) model through timm: 'small_cnn', 'resnet50', 'tf_efficientnet_lite0', ..."""
    if architecture not in timm.list_models() and architecture != "small_cnn":
        raise EmotionError(f"unknown architecture {architecture!r}; use 'small_cnn' or a timm model name "
                           "such as 'resnet50'")
    return timm.create_model(architecture, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


def resolve_source(source: str | os.PathLike) -> Path:
    """Turn `hf-hub:org/name[@revision]` or `local-dir:/path` into a local folder holding config.json."""
    source = str(source)
    if source.startswith("local-dir:"):
        path = Path(source[len("local-dir:"):]).expanduser()
        if not (path / CONFIG_NAME).is_file():
            raise EmotionError(f"{source!r}: no {CONFIG_NAME} in {path}; point local-dir: at an exported model folder")
        return path
    if source.startswith("hf-hub:"):
        repo_id, _, revision = source[len("hf-hub:"):].partition("@")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(repo_id, revision=revision or None,
                                          allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "*.json", "*.md", "*.png"]))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
            raise EmotionError(f"could not fetch {source!r} from the Hugging Face Hub ({type(e).__name__}); check the "
                               "repo id and your network, or download it once and use local-dir:/path") from None
    raise EmotionError(f"ambiguous model source {source!r}: write hf-hub:org/name[@revision] for the Hub "
                       "or local-dir:/path/to/folder for a local export")


def load_model(source: str | os.PathLike) -> tuple[nn.Module, ModelInfo, Path]:
    """Load an exported model (weights from safetensors only) and its facts; the model is in eval mode."""
    folder = resolve_source(source)
    config = json.loads((folder / CONFIG_NAME).read_text())
    info = ModelInfo.from_config(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise EmotionError(f"{folder} has no {WEIGHTS_NAME}; models load from safetensors only")
    # model_args: architecture options such as the CNN's widths (never num_classes: TimmWrapper rejects it there)
    args = {k: v for k, v in config.get("model_args", {}).items() if k not in ("num_classes", "in_chans")}
    model = create_model(info.architecture, num_classes=info.num_classes, in_chans=info.channels, **args)
    state = {k: v.float() for k, v in load_file(str(weights)).items()}  # weights may be stored in half precision
    model.load_state_dict(state, strict=True)
    return model.eval(), info, folder
