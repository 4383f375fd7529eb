"""Training on several processes with ``torch.distributed`` (launched by ``torchrun``).

``ocrlib train`` and :func:`ocrlib.train.train` run unchanged under

    torchrun --nproc_per_node N [--nnodes M --node_rank R --rdzv-endpoint HOST:PORT] \\
        -m ocrlib train ...

:func:`setup` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
joins the process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the
CPU. Without them it returns a one-process :class:`Dist` and nothing here communicates.

What keeps N processes equal to one (``tests/test_distributed.py`` checks it):

* every rank computes the same global batch of step ``s`` (:class:`ocrlib.sampler.StepSampler`)
  and reads its own share (:class:`ShardSampler`, lines ``rank::N`` of it), so the global batch
  is the configured one and resuming stays exact;
* DistributedDataParallel averages the gradients; the CTC loss is a mean over lines, so the
  average of N equal shares is the loss of the whole batch; the alignment-guided term is
  normalised by its global weight (:func:`all_sum`);
* BatchNorm uses the statistics of the global batch: :class:`torch.nn.SyncBatchNorm` on CUDA,
  :class:`GlooSyncBatchNorm` on the CPU (PyTorch's refuses CPU tensors);
* only rank 0 writes checkpoints, history and figures; validation is split across ranks and its
  predictions gathered, so every rank computes the same CER and agrees on the best checkpoint.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

#: seconds a collective may wait for the other ranks before the job fails (``OCRLIB_DIST_TIMEOUT``)
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: its ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are other processes to talk to."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device, timeout_s: float | None = None) -> tuple[Dist, torch.device]:
    """Join the process group torchrun described, if any.

    Args:
        device: the device the training asked for; on CUDA each process takes
            ``cuda:LOCAL_RANK``.
        timeout_s: how long a collective waits for the other ranks before raising (default
            ``OCRLIB_DIST_TIMEOUT`` or 600 s): a rank that dies or hangs ends the job.

    Returns:
        This process's :class:`Dist` and its device.
    """
    if not launched():
        return Dist(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timeout_s or float(os.environ.get("OCRLIB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout),
                                **({"device_id": device} if device.type == "cuda" else {}))
        log.info("rank %d of %d joined the %s process group (timeout %.0f s)", rank, world,
                 backend, timeout)
    return Dist(rank, world, local), device


def teardown(d: Dist) -> None:
    """Leave the process group (after a barrier, so no rank exits while others still write)."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def describe_failure(err: BaseException) -> str:
    """What went wrong on a rank, in words: a timed-out or broken collective means another rank
    died or stopped answering."""
    text = f"{type(err).__name__}: {err}".strip()
    lowered = text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        wait = os.environ.get("OCRLIB_DIST_TIMEOUT", f"{DEFAULT_TIMEOUT_S:.0f}")
        return (f"another rank did not answer within {wait} s (it died, hung or is far slower; "
                f"OCRLIB_DIST_TIMEOUT sets the wait). {text}")
    if "connection closed" in lowered or "connection reset" in lowered or "broken pipe" in lowered:
        return f"another rank went away (see its own error above). {text}"
    return text


class ShardSampler(Sampler[list[tuple[int, int]]]):
    """This rank's share of every batch of ``batches``: lines ``rank, rank + world, ...``, each
    as ``(index, width of the global batch)`` for :class:`Keyed` and :func:`shard_collate`.

    Interleaving (rather than cutting the batch in halves) gives every rank lines of the same
    widths when the batches are width-sorted, so no rank waits for another; padding every share
    to the global batch's width keeps the BatchNorm statistics and the convolutions at the
    line ends what one process computes on the whole batch.
    """

    def __init__(self, batches: Sampler[list[int]], d: Dist, widths: Sequence[int]) -> None:
        self.batches, self.d, self.widths = batches, d, widths

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            wide = max(self.widths[i] for i in batch)
            yield [(i, wide) for i in batch[self.d.rank::self.d.world]]


class Keyed(Dataset):
    """``dataset`` indexed by ``(index, width)`` keys; returns ``(sample, width)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        return self.dataset[key[0]], key[1]


def shard_collate(items: Sequence[tuple[Any, int]], **kw: Any) -> Any:
    """:func:`ocrlib.data.ctc_collate` of a share, padded to its global batch's width."""
    from .data import ctc_collate

    return ctc_collate([s for s, _ in items], min_width=max(w for _, w in items), **kw)


def check_batch(batch_size: int, d: Dist) -> None:
    """Refuse a global batch that does not split evenly across the ranks."""
    if batch_size % d.world:
        raise ValueError(f"the batch size {batch_size} does not split evenly across {d.world} "
                         f"processes: choose a multiple of {d.world}")


def all_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """The sum of ``x`` over the ranks (a copy; ``x`` itself when alone). Not differentiable."""
    if not d.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def all_mean(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of ``x`` over the ranks (``x / 1`` when alone). Not differentiable."""
    return all_sum(x, d) / d.world


def broadcast_buffers(model: nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), e.g. before validating:
    with ``OCRLIB_SYNC_BN=0`` each rank's drift apart during a step."""
    if d.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when alone)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """``model`` with BatchNorm synchronised and wrapped in DistributedDataParallel (``model``
    itself when alone). The BatchNorm layers are replaced in place, so ``model``'s state dict
    keeps its keys: checkpoints load in one process and in many.

    ``OCRLIB_SYNC_BN=0`` leaves BatchNorm per rank: faster on CPUs (each synchronised layer
    waits for every rank twice a step), but each rank then normalises with the statistics of
    its share of the batch, as a smaller batch would.
    """
    if not d.enabled:
        return model
    if os.environ.get("OCRLIB_SYNC_BN", "1") == "0":
        log.info("BatchNorm normalises each rank's share on its own (OCRLIB_SYNC_BN=0)")
    else:
        sync_batchnorm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Replace every trainable BatchNorm2d of ``model`` by a synchronised one, in place; returns
    how many. Frozen ones (no gradient) normalise with running statistics and stay."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.BatchNorm2d or not child.affine or not child.weight.requires_grad:
                continue
            cls = nn.SyncBatchNorm if device.type != "cpu" else GlooSyncBatchNorm
            new = cls(child.num_features, child.eps, child.momentum, child.affine,
                      child.track_running_stats).to(device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(parent, name, new)
            count += 1
    return count


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all ranks, on the CPU (PyTorch's SyncBatchNorm
    refuses CPU tensors). Same parameters and buffers as ``nn.BatchNorm2d``.

    One collective forward (each rank's count, mean and sum of squares about its own mean,
    gathered and combined by Chan et al.'s formula in float64) and one backward
    (the sums of the upstream gradient and of its product with the normalised input: the terms
    by which every line's gradient depends on the other lines of the batch), as
    ``torch.nn.SyncBatchNorm`` does on GPUs.

    Shape:
        x: ``(B, C, H, W)`` -> ``(B, C, H, W)``
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var, count = _SyncBatchNorm.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / max(count - 1.0, 1.0))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return y


class _SyncBatchNorm(torch.autograd.Function):
    """BatchNorm's forward and backward with the statistics of every rank's batch."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        xf, c = x.float(), x.shape[1]
        n = x.numel() / c
        local_mean = xf.mean((0, 2, 3))
        local_m2 = (xf - local_mean[None, :, None, None]).square().sum((0, 2, 3))
        mine = torch.cat([local_mean.new_tensor([n]), local_mean, local_m2]).double()
        every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(every, mine)
        counts, means, m2s = (torch.stack(every)[:, k] for k in (slice(0, 1), slice(1, c + 1),
                                                                  slice(c + 1, None)))
        count = float(counts.sum())
        mean = (counts * means).sum(0) / count
        # Chan et al.'s combination: no cancellation however far the mean is from zero
        var = ((m2s.sum(0) + (counts * (means - mean).square()).sum(0)) / count).float()
        invstd = torch.rsqrt(var + eps)
        xhat = (xf - mean.float()[None, :, None, None]) * invstd[None, :, None, None]
        y = xhat * weight.float()[None, :, None, None] + bias.float()[None, :, None, None]
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.count, ctx.dtype = count, x.dtype
        ctx.mark_non_differentiable(mean, var)
        layout = _layout(x)
        return y.to(x.dtype).contiguous(memory_format=layout), mean.float(), var, count

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        xhat, weight, invstd = ctx.saved_tensors
        dyf = dy.float()
        sum_dy, sum_dy_xhat = dyf.sum((0, 2, 3)), (dyf * xhat).sum((0, 2, 3))
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both)
        c = sum_dy.shape[0]
        g_dy, g_dy_xhat = both[:c] / ctx.count, both[c:] / ctx.count
        scale = (weight.float() * invstd)[None, :, None, None]
        dx = scale * (dyf - g_dy[None, :, None, None] - xhat * g_dy_xhat[None, :, None, None])
        # the parameters' gradients stay this rank's: DDP averages them over the ranks
        return (dx.to(ctx.dtype), sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None)


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def shard_list(items: Sequence[Any], d: Dist) -> list[Any]:
    """This rank's share of ``items``: every ``world``-th from ``rank``."""
    return list(items[d.rank::d.world])
