"""The order of training batches: a pure function of the seed and the step (notebook 04).

Resuming a run that was killed must give the batches the uninterrupted run would have had,
so step ``s`` is computed, never remembered: batch ``s % per_epoch`` of epoch
``s // per_epoch``, whose batches are shuffled with a generator seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class StepSampler(Sampler[list[int]]):
    """Batches of indices for steps ``start .. total-1``; step s is batch ``s % per_epoch`` of
    epoch ``s // per_epoch``, whose batches are a function of ``(seed, epoch)`` only.

    With ``widths``, batches hold lines of similar widths (less padding to compute): each
    epoch's permutation is cut into chunks of ``bucket`` batches, each chunk sorted by width
    and cut into batches, and the batches of the epoch shuffled.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int,
                 widths: Sequence[int] | None = None, bucket: int = 32) -> None:
        if n < batch_size:
            raise ValueError(f"{n} training samples are fewer than one batch of {batch_size}")
        if widths is not None and len(widths) != n:
            raise ValueError(f"{len(widths)} widths for {n} samples")
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.widths, self.bucket = widths, bucket
        self.per_epoch = n // batch_size

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def epoch(self, e: int) -> list[list[int]]:
        """The batches of epoch ``e``, in order."""
        g = torch.Generator().manual_seed(self.seed * 100003 + e)
        perm = torch.randperm(self.n, generator=g).tolist()[: self.per_epoch * self.bs]
        if self.widths is None:
            return [perm[k:k + self.bs] for k in range(0, len(perm), self.bs)]
        batches = []
        chunk = self.bs * self.bucket
        for k in range(0, len(perm), chunk):
            part = sorted(perm[k:k + chunk], key=lambda i: (self.widths[i], i))
            batches += [part[j:j + self.bs] for j in range(0, len(part), self.bs)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[j] for j in order]

    def __iter__(self) -> Iterator[list[int]]:
        batches, epoch = [], -1
        for step in range(self.start, self.total):
            e, pos = divmod(step, self.per_epoch)
            if e != epoch:
                batches, epoch = self.epoch(e), e
            yield batches[pos]
