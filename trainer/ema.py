"""An exponential moving average of a model's weights (and BatchNorm buffers), kept beside the training weights.

Validation and the export use the average when `ema_decay` > 0: it smooths the last few hundred steps' noise, which
on short fine-tunes is most of what separates one epoch's model from the next.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    def rate(self, step: int) -> float:
        """The decay at optimizer step `step` (1-based): ramped up from 0.5 so early averages are not the init's."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.rate(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().float(), 1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not fit this model: {sorted(missing)[:3]}")
        self.shadow = {k: v.clone() for k, v in state.items()}

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Inside the block the model holds the averaged weights; the training weights come back after."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(saved)
