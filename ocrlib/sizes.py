"""How big a model is: parameter counts and a training-memory estimate (notebooks 02 and 03)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class SizeEstimate:
    """Parameter counts and a training-memory estimate (MiB, float32)."""

    total_params: int
    trainable_params: int
    weights_mib: float
    grads_mib: float
    adam_mib: float
    activations_mib: float

    @property
    def train_mib(self) -> float:
        return self.weights_mib + self.grads_mib + self.adam_mib + self.activations_mib


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those that train, with ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def estimate_memory(model: nn.Module, example: torch.Tensor) -> SizeEstimate:
    """Estimate training memory for one batch shaped like ``example``.

    Weights count every parameter, gradients and the two AdamW moments only trainable
    ones; activations are the outputs of every leaf module in one forward pass (an upper
    bound on what autograd keeps: it keeps fewer when a frozen prefix needs no graph).
    """
    mib = 4 / 2**20
    total, trainable = count_params(model), count_params(model, trainable_only=True)
    act = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            act[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()  # BatchNorm must not update its statistics from the probe
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return SizeEstimate(total, trainable, total * mib, trainable * mib, 2 * trainable * mib,
                        act[0] * mib)
