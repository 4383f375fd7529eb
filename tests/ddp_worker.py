"""One process of a distributed test job (``tests/test_distributed.py`` launches it with torchrun).

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py DATA OUT [--stop-after N]
        [--resume] [--hang-at STEP] [--check-batchnorm]

Trains the micro model of :func:`micro` on ``DATA/train`` and ``DATA/val`` into
``OUT/best_m.pth``, saving the first step's gradients; ``--hang-at S`` makes rank 1 stop
answering at step S (a hung rank). ``--check-batchnorm`` first compares
:class:`ocrlib.distributed.GlooSyncBatchNorm` with one BatchNorm2d on the whole batch and writes
the largest differences to ``OUT/bn_rank<r>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from ocrlib.profiles import Profile, TrainConfig, profiles


def micro(steps: int = 6) -> Profile:
    """The tiny profile at encoder width 32, batch 4, float32, the guided start on."""
    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    prof.train = TrainConfig(steps=steps, batch_size=4, lr=1e-3, eval_every=3, save_every=3,
                             val_limit=8, amp="off", device="cpu", guided_steps=steps)
    return prof


def keep_first_gradients(session_cls: type, path: Path) -> None:
    """Patch ``session_cls.step`` to save the gradients of the first step to ``path`` (rank 0)."""
    real = session_cls.step

    def step(self, batch):
        loss = real(self, batch)
        if self.state.step == 1 and self.dist.is_main:
            torch.save({n: p.grad for n, p in self.model.named_parameters()}, path)
        return loss

    session_cls.step = step


def _train(args: argparse.Namespace) -> None:
    from ocrlib import session
    from ocrlib.train import train

    keep_first_gradients(session.Session, args.out / "first_gradients.pt")
    if args.hang_at is not None and int(os.environ["RANK"]) == 1:
        real = session.Session.step

        def step(self, batch):  # rank 1 stops answering: the others must time out, not hang
            if self.state.step == args.hang_at:
                time.sleep(3600)
            return real(self, batch)

        session.Session.step = step
    prof = micro()
    train(prof.model, prof.train, args.data / "train", args.data / "val", args.out / "best_m.pth",
          progress=False, resume=args.resume, stop_after=args.stop_after)


def _batchnorm(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from ocrlib.distributed import GlooSyncBatchNorm, setup

    d, _ = setup(torch.device("cpu"))
    torch.manual_seed(0)  # the same batch on every rank
    x = torch.randn(8, 5, 3, 7) * 3 + 1
    w, b = torch.rand(5) + 0.5, torch.randn(5)
    upstream = torch.randn(8, 5, 3, 7)
    ref = torch.nn.BatchNorm2d(5)
    ref.weight.data, ref.bias.data = w.clone(), b.clone()
    xr = x.clone().requires_grad_()
    (ref(xr) * upstream).sum().backward()
    mine = GlooSyncBatchNorm(5)
    mine.weight.data, mine.bias.data = w.clone(), b.clone()
    xs = x[d.rank::d.world].clone().requires_grad_()
    (mine(xs) * upstream[d.rank::d.world]).sum().backward()
    grads = [mine.weight.grad.clone(), mine.bias.grad.clone()]
    for g in grads:  # DDP would sum (and average) the parameter gradients across ranks
        dist.all_reduce(g)
    diffs = {
        "output": (mine(xs).detach() - ref(x)[d.rank::d.world].detach()).abs().max().item(),
        "input_grad": (xs.grad - xr.grad[d.rank::d.world]).abs().max().item(),
        "weight_grad": (grads[0] - ref.weight.grad).abs().max().item(),
        "bias_grad": (grads[1] - ref.bias.grad).abs().max().item(),
        "running_mean": (mine.running_mean - ref.running_mean).abs().max().item(),
        "running_var": (mine.running_var - ref.running_var).abs().max().item(),
    }
    (args.out / f"bn_rank{d.rank}.json").write_text(json.dumps(diffs))
    dist.barrier()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at", type=int)
    p.add_argument("--check-batchnorm", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.check_batchnorm:
        _batchnorm(args)
    _train(args)


if __name__ == "__main__":
    main()
