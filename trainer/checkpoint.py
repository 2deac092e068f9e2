"""Checkpoints as one safetensors file each: tensors by path, everything else as JSON metadata; written atomically,
with the previous version kept beside it (`last.prev.safetensors`) to fall back on when a file is unreadable."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError  # noqa: F401  (re-exported: callers catch checkpoint.CheckpointError)

log = logging.getLogger(__name__)


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


def previous(path: Path) -> Path:
    """Where the version before `path` is kept: last.safetensors -> last.prev.safetensors."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Write `state` (nested dicts of tensors and plain values) to `path` atomically (temp file + rename); with
    `keep_previous`, the file it replaces becomes `previous(path)`."""
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
    if keep_previous and path.is_file():
        os.replace(path, previous(path))  # a kill between the two renames leaves prev (and the full tmp): loadable
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {k: unflatten(v, tensors) for k, v in meta.items()}


def load_latest_good(path: Path) -> tuple[dict[str, Any], Path] | None:
    """(state, file) from `path`, else from `previous(path)` when `path` is unreadable (truncated, empty, not a
    checkpoint), said in one log line; None when neither exists; CheckpointError when none that exists reads."""
    tried: list[tuple[Path, str]] = []
    for candidate in (path, previous(path)):
        if not candidate.is_file():
            continue
        try:
            state = load(candidate)
        except Exception as e:  # SafetensorError, bad JSON, missing keys: all mean "this file is unusable"
            tried.append((candidate, str(e).splitlines()[0][:100] if str(e) else type(e).__name__))
            continue
        if tried:
            log.warning("%s is unreadable (%s); using %s instead", *tried[0], candidate)
        return state, candidate
    if not tried:
        return None
    what = "; ".join(f"{p.name} is unreadable ({reason})" for p, reason in tried)
    raise CheckpointError(f"no readable checkpoint in {path.parent}: {what}; delete that folder to start the run over")
