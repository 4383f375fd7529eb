"""Turning CTC frame scores into text (notebook 05).

Greedy decoding takes the best class per frame, merges repeats and drops blanks: the
most probable *path*, which is not always the most probable *text* (many paths collapse
to the same text; :func:`beam_search` sums over them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .charset import BLANK, Charset


@dataclass
class Decoded:
    """One decoded line: its text and a confidence in [0, 1]."""

    text: str
    confidence: float


def collapse(path: list[int], blank: int = BLANK) -> list[int]:
    """CTC's many-to-one map: merge runs of equal classes, then drop blanks."""
    out: list[int] = []
    prev = None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def greedy_decode(log_probs: torch.Tensor, charset: Charset,
                  lengths: torch.Tensor | None = None) -> list[Decoded]:
    """Best path per line, vectorised over the batch.

    The confidence is the probability of the chosen path, ``exp(Σ_t max log p_t)``.

    Shape:
        log_probs: ``(B, T, V)`` log-softmax scores; lengths: ``(B,)`` valid frames (default T).
    """
    best, idx = log_probs.max(dim=-1)  # (B, T)
    B, T = idx.shape
    valid = torch.ones_like(idx, dtype=torch.bool)
    if lengths is not None:
        valid = torch.arange(T, device=idx.device)[None, :] < lengths[:, None]
    # keep frame t when it is not blank and differs from frame t-1
    keep = (idx != BLANK) & valid
    keep[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    conf = (best * valid).sum(dim=1).exp()
    idx, keep, conf = idx.cpu(), keep.cpu(), conf.float().cpu()
    return [Decoded(charset.decode(idx[b][keep[b]].tolist()), float(conf[b])) for b in range(B)]
