"""Model definitions in torch and the one torch loader for a model source (`emotion/sources.py` says what a source
is). Only the trainer, the ONNX export and the torch backend (`emotion.torch_backend`) import this module: serving
reads config.json (`ModelInfo.from_folder`) and runs model.onnx without torch.

Both architectures are built through timm: `resnet50` (and any other timm name) is timm's own, and the small CNN is
registered with timm's model registry here, so `timm.create_model("small_cnn")` works once this module is imported.
The model's facts (labels, input size, mean/std, crop margin, temperature) live in its config.json (`ModelInfo`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .errors import EmotionError
from .info import CONFIG_NAME, WEIGHTS_NAME, ModelInfo  # noqa: F401  (re-exported: model facts)
from .sources import resolve

log = logging.getLogger(__name__)



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
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"small_cnn": _small_cnn_cfg()})  # read by timm's register_model


@register_model
def small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """The project's small CNN, registered with timm so that `timm.create_model('small_cnn')` builds it."""
    return build_model_with_cfg(SmallCNN, "small_cnn", pretrained, **kwargs)


# ------------------------------------------------------------------------------------------------------------ loading
def create_model(architecture: str, num_classes: int = 8, in_chans: int = 1, pretrained: bool = False,
                 **kwargs) -> nn.Module:
    """Build an (untrained) model through timm: 'small_cnn', 'resnet50', 'tf_efficientnet_lite0', ..."""
    if architecture not in timm.list_models() and architecture != "small_cnn":
        raise EmotionError(f"unknown architecture {architecture!r}; use 'small_cnn' or a timm model name "
                           "such as 'resnet50'")
    return timm.create_model(architecture, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


def load_model(source: str | os.PathLike) -> tuple[nn.Module, ModelInfo, Path]:
    """Load an exported model (weights from safetensors only) and its facts; the model is in eval mode.

    `source`: hf-hub:org/name[@revision], local-dir:/path or a shipped model's name (see emotion/sources.py).
    """
    folder = resolve(source)
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
    return model.eval().to(memory_format=torch.channels_last), info, folder  # see torch_backend.face_logits
