"""Checkpoints as one safetensors file each: tensors by path, everything else as JSON metadata; written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor in a nested dict/list into `tensors` under a dotted key; return the JSON-able rest."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, f"{prefix}.k{i}", tensors), flatten(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        items = [unflatten(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj.get("tuple") else items
    return obj


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (nested dicts of tensors and plain values) to `path` atomically (temp file + rename)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {k: flatten(v, k, tensors) for k, v in state.items()}
    # safetensors refuses tensors that share memory; clone the (rare) aliases
    seen: set[int] = set()
    for k, t in tensors.items():
        if t.data_ptr() in seen and t.numel():
            tensors[k] = t.clone()
        seen.add(t.data_ptr())
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {k: unflatten(v, tensors) for k, v in meta.items()}
