"""Build the model to train (from scratch, timm's ImageNet weights, or --init safetensors) and its optimiser groups."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.models import ModelInfo, create_model
from emotion.sources import resolve_weights

from .config import TrainConfig
from .errors import InitError

log = logging.getLogger(__name__)

# ImageNet weights on the Hub for `--pretrained` (timm's own tags)
HUB_WEIGHTS = {"resnet50": "resnet50.a1_in1k", "tf_efficientnet_lite0": "tf_efficientnet_lite0.in1k"}


def model_info(cfg: TrainConfig) -> ModelInfo:
    c = cfg.channels
    return ModelInfo(architecture=cfg.model, input_size=(c, cfg.img_size, cfg.img_size), mean=(cfg.mean,) * c,
                     std=(cfg.std,) * c, crop_margin=cfg.crop_margin, crop_offset_y=cfg.crop_offset_y,
                     tta_flip=cfg.tta_flip, flip_margin=cfg.flip_margin,
                     uncertain_threshold=cfg.uncertain_threshold)


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, ModelInfo]:
    info = model_info(cfg)
    kw = dict(num_classes=len(LABELS), in_chans=cfg.channels, drop_rate=cfg.drop_rate)
    if cfg.pretrained and cfg.model != "small_cnn" and not cfg.init:
        name = HUB_WEIGHTS.get(cfg.model, cfg.model)
        try:
            model = create_model(name, pretrained=True, **kw)
        except Exception as e:  # offline / no weights: one line that names the two ways out
            raise InitError(f"could not get ImageNet weights for {cfg.model} from the Hub ({type(e).__name__}); "
                            "pass --init local-dir:/path/to/weights (a model.safetensors) or --no-pretrained") from None
    else:
        model = create_model(cfg.model, **kw)
    if cfg.init:
        load_init(model, cfg.init)
    return model, info


def _init_file(source: str) -> Path:
    try:
        return resolve_weights(source)
    except EmotionError as e:
        raise InitError(f"--init: {e}; or train with --no-pretrained") from None


def load_init(model: torch.nn.Module, source: str) -> None:
    """Copy matching weights from a safetensors file; the classifier (other class count) starts fresh.

    A 3-channel first conv loaded into a 1-channel model is summed over its input channels (gray = R = G = B).
    """
    state = load_file(str(_init_file(source)))
    own = model.state_dict()
    load, skipped = {}, []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            load[k] = v
        elif k in own and v.ndim == 4 and own[k].shape[1] == 1 and v.shape[1] == 3 and own[k].shape[0] == v.shape[0]:
            load[k] = v.sum(1, keepdim=True)
        else:
            skipped.append(k)
    missing = [k for k in own if k not in load]
    head = {k for k, _ in model.get_classifier().named_parameters(prefix=_classifier_prefix(model))}
    if set(missing) - head - {k for k in missing if k.endswith("num_batches_tracked")}:
        raise EmotionError(f"--init {source} does not fit {type(model).__name__}: missing {missing[:5]}...")
    model.load_state_dict(load, strict=False)
    log.info("initialised from %s: %d tensors loaded, %d skipped (%s)", source, len(load), len(skipped),
             ", ".join(skipped[:4]))


def _classifier_prefix(model: torch.nn.Module) -> str:
    clf = model.get_classifier()
    return next(name for name, mod in model.named_modules() if mod is clf)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """No weight decay on norms and biases; the backbone's LR scaled by `backbone_lr_mult` (transfer learning)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((id(p) in head, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr": cfg.lr * (1.0 if is_head else cfg.backbone_lr_mult),
             "weight_decay": 0.0 if no_wd else cfg.weight_decay} for (is_head, no_wd), ps in sorted(groups.items())]
