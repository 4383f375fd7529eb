"""The training losses: CTC, and the alignment-guided start beside it (notebook 04).

CTC sums over every alignment of the label with the frames, so it needs no alignment; at the
start of training from random weights that is also its weakness: its gradient spreads over
every frame and the model first learns to emit only blanks. The synthetic generator knows
where it drew each character, so a frame-wise cross-entropy against that alignment
(:func:`guided_term`) gives the network a direct signal from the first step; it fades out, and
CTC alone decides what the model finally emits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .profiles import TrainConfig


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
             input_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CTC loss of a batch.

    Shape:
        logits: ``(B, T, V)``; targets: ``(sum of lengths,)``; target_lengths: ``(B,)``;
        input_lengths: ``(B,)`` frames of each line (padding excluded; default T)
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V), as CTCLoss wants
    T, B = log_probs.shape[:2]
    if input_lengths is None:
        input_lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)
    input_lengths = input_lengths.clamp(max=T)
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)


def guided_term(logits: torch.Tensor, frame_targets: torch.Tensor | None, step: float,
                cfg: TrainConfig,
                mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
                ) -> torch.Tensor | float:
    """The alignment-guided start: cross-entropy of every frame against the generator's
    alignment (:func:`ocrlib.data.alignment_targets`), weighted ``cfg.guided_weight`` and
    fading linearly to 0 over the first ``cfg.guided_steps`` steps; 0 after them or when the
    batch has no recorded alignment. ``step`` is where the run stands on its schedule
    (:meth:`ocrlib.session.OneCycle.cycle_step`: the step itself unless a budgeted run was
    ended early).

    ``mean_over_ranks`` (distributed training): the mean of a tensor over the ranks. The
    cross-entropy's weighted mean is then taken over the frames of the whole global batch
    (this rank's weighted sum over the mean of the ranks' weight totals), so the gradients that
    DDP averages are those of one process on the whole batch.

    Shape:
        logits: ``(B, T, V)``; frame_targets: ``(B, T)``
    """
    if step >= cfg.guided_steps or frame_targets is None:
        return 0.0
    weight = cfg.guided_weight * (1.0 - step / cfg.guided_steps)
    T = min(logits.shape[1], frame_targets.shape[1])
    class_weight = torch.ones(logits.shape[-1], device=logits.device)
    class_weight[0] = cfg.guided_blank_weight
    flat_logits, flat_targets = logits[:, :T].float().flatten(0, 1), frame_targets[:, :T].flatten()
    if mean_over_ranks is None:
        return weight * F.cross_entropy(flat_logits, flat_targets, weight=class_weight,
                                        ignore_index=-100)
    total = F.cross_entropy(flat_logits, flat_targets, weight=class_weight, ignore_index=-100,
                            reduction="sum")
    counted = class_weight[flat_targets[flat_targets != -100]].sum()
    return weight * total / mean_over_ranks(counted).clamp_min(1e-12)
