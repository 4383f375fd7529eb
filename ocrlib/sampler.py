"""The order of training batches: a pure function of the seed and the step (notebook 04).

Resuming a run that was killed must give the batches the uninterrupted run would have had,
so step ``s`` is computed, never remembered: batch ``s % per_epoch`` of epoch
``s // per_epoch``, whose batches are shuffled with a generator seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

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
        return _walk(self.start, self.total, self.per_epoch, self.epoch)


def _walk(start: int, total: int, per_block: int, block: Callable[[int], list[list[int]]]
          ) -> Iterator[list[int]]:
    """The batches of steps ``start .. total-1``, where step s is batch ``s % per_block`` of
    ``block(s // per_block)`` (each block computed once, when the walk reaches it)."""
    batches, current = [], -1
    for step in range(start, total):
        b, pos = divmod(step, per_block)
        if b != current:
            batches, current = block(b), b
        yield batches[pos]


def split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``ratios`` (largest remainders; sums to ``total``)."""
    s = float(sum(ratios))
    exact = [total * r / s for r in ratios]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


class MixSampler(Sampler[list[int]]):
    """Batches drawn from several sources in fixed proportions, as a pure function of
    ``(seed, step)`` (so resuming stays exact).

    The sources are concatenated (source ``k``'s lines are indices ``offsets[k] ..``). Steps are
    grouped in chunks of ``bucket`` batches; a chunk takes :func:`split_counts` of its lines from
    each source, in order, from that source's own endless stream (its lines shuffled anew every
    pass, with a generator seeded by ``(seed, source, pass)``), so a small source repeats more
    often than a large one. With ``widths``, each chunk is sorted by width before it is cut into
    batches (less padding); the chunk's batches are then shuffled.
    """

    def __init__(self, sizes: Sequence[int], ratios: Sequence[float], batch_size: int, seed: int,
                 start: int, total: int, widths: Sequence[int] | None = None, bucket: int = 32
                 ) -> None:
        if len(sizes) != len(ratios) or any(r < 0 for r in ratios) or not sum(ratios) > 0:
            raise ValueError(f"give one non-negative mixing ratio per source, not all zero "
                             f"({len(sizes)} sources, ratios {list(ratios)})")
        self.bucket = max(1, bucket)
        self.counts = split_counts(batch_size * self.bucket, ratios)
        for n, c, r in zip(sizes, self.counts, ratios):
            if c and not n:
                raise ValueError("a source with a mixing ratio above 0 has no lines")
            if r > 0 and not c:
                raise ValueError(f"a ratio of {r} gives that source no line in {batch_size * self.bucket} "
                                 "lines: raise it, or the batch size")
        self.sizes, self.bs, self.seed, self.start, self.total = list(sizes), batch_size, seed, start, total
        self.offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        self.widths = widths

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def _stream(self, k: int, begin: int, count: int) -> list[int]:
        """Positions ``begin .. begin + count - 1`` of source ``k``'s endless stream (global ids)."""
        out, n = [], self.sizes[k]
        pos = begin
        while pos < begin + count:
            rnd, at = divmod(pos, n)
            g = torch.Generator().manual_seed((self.seed * 1009 + k) * 100003 + rnd)
            perm = torch.randperm(n, generator=g).tolist()
            take = min(n - at, begin + count - pos)
            out += [self.offsets[k] + i for i in perm[at:at + take]]
            pos += take
        return out

    def chunk(self, c: int) -> list[list[int]]:
        """The ``bucket`` batches of chunk ``c``, in order."""
        lines = [i for k, cnt in enumerate(self.counts) for i in self._stream(k, c * cnt, cnt)]
        g = torch.Generator().manual_seed(self.seed * 7919 + c)
        if self.widths is not None:
            lines.sort(key=lambda i: (self.widths[i], i))
        else:
            lines = [lines[j] for j in torch.randperm(len(lines), generator=g).tolist()]
        batches = [lines[j:j + self.bs] for j in range(0, len(lines), self.bs)]
        return [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return _walk(self.start, self.total, self.bucket, self.chunk)
