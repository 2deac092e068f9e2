"""Export a trained model as a Hub-ready folder that timm, transformers and our Predictor all load."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from emotion.info import CONFIG_NAME, WEIGHTS_NAME, ModelInfo
from emotion.onnx_export import export_onnx

from .evaluation import save_confusion_png

log = logging.getLogger(__name__)

# pretrained_cfg keys that describe timm's ImageNet checkpoint, not this model; dropped so nothing fetches them
_STALE_KEYS = ("url", "hf_hub_id", "hf_hub_filename", "tag", "file", "state_dict", "source", "test_input_size",
               "test_crop_pct", "pool_size", "test_pool_size", "paper_ids", "paper_name", "origin_url", "notes",
               "license")  # timm's weights' licence; ours learnt from research-use images (the card says "other")


def hub_config(model: torch.nn.Module, info: ModelInfo) -> dict:
    """config.json in timm's Hub format. `model_args` holds only in_chans: TimmWrapper builds the model from it (not
    from pretrained_cfg) and rejects num_classes there."""
    pcfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", {}) or {}).items() if k not in _STALE_KEYS}
    pcfg.update(architecture=info.architecture, label_names=list(info.labels))
    return info.to_config(pretrained_cfg=pcfg, num_features=int(getattr(model, "num_features", 0)) or None,
                          model_args={"in_chans": info.channels})


def export_model(model: torch.nn.Module, info: ModelInfo, export_dir: Path, results: dict,
                 dtype: str = "float16") -> Path:
    """Write model.safetensors, config.json, model.onnx (from those weights: `emotion.onnx_export`),
    eval_results.json (with the weights' size), confusion_matrix.png and the model card."""
    export_dir.mkdir(parents=True, exist_ok=True)
    half = dtype == "float16"
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(export_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    results = {**results, "size_mb": round((export_dir / WEIGHTS_NAME).stat().st_size / 2**20, 2)}
    (export_dir / CONFIG_NAME).write_text(json.dumps(hub_config(model, info), indent=2) + "\n")
    export_onnx(export_dir)  # for ONNX Runtime: the /live page runs it in the visitor's browser
    (export_dir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    first = next(iter(results.get("splits", {}).values()), None)
    if first and "confusion_matrix" in first:
        save_confusion_png(first["confusion_matrix"], export_dir / "confusion_matrix.png",
                           f"{results.get('model_name', info.architecture)}: {next(iter(results['splits']))}")
    from model_card.render import render_card

    render_card(export_dir)
    log.info("exported to %s", export_dir)
    return export_dir
