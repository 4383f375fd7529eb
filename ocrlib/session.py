"""One training run's state: the model, optimizer, schedule, grad scaler and where it stands
(notebook 04). :class:`Session` takes one step at a time and writes and reads the checkpoints that
make resuming exact; :func:`ocrlib.train.train` drives it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointMismatchError, built_config, config_differences, read_checkpoint
from .data import Batch
from .distributed import Dist, all_mean, all_sum, check_batch, gather, wrap
from .losses import ctc_loss, guided_term
from .model import MambaOCR, ModelConfig
from .precision import autocast, numerics, resolve_amp, resolve_device
from .profiles import TrainConfig
from .sources import Sources

log = logging.getLogger(__name__)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: matrices and convolutions decay, biases, norms and
    the SSM's ``A_log`` and ``D`` (all of fewer than 2 dimensions) do not.

    Fused into one kernel where this torch has one for the device (CPU: torch >= 2.4):
    measured 2.5x faster than the per-tensor loop for the laptop model (53 -> 21 ms a step).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=cfg.lr)


class OneCycle(torch.optim.lr_scheduler.OneCycleLR):
    """:class:`torch.optim.lr_scheduler.OneCycleLR`, whose rest can be squeezed into fewer
    steps or stretched over more (:meth:`squeeze`): a budgeted run that falls behind the clock
    ends early and still anneals all the way, and one ahead of it goes on longer
    (:func:`ocrlib.budget.deadline_steps`). Until squeezed, it is OneCycleLR exactly; the
    squeeze is part of its ``state_dict``, so a resumed run keeps it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        #: ``(at, cycle_at, end)``: from step ``at`` (where the cycle stood at ``cycle_at``)
        #: the rest of the cycle runs until step ``end``; None while unsqueezed
        self.squeezed: tuple[int, float, int] | None = None
        super().__init__(optimizer, **kwargs)

    def cycle_step(self, step: int) -> float:
        """Where on the cycle of ``total_steps`` the run's step ``step`` lies (``step`` itself
        until squeezed)."""
        if self.squeezed is None:
            return float(step)
        at, cycle_at, end = self.squeezed
        if step >= end:  # past the run's last step, where an unsqueezed cycle stands at its end
            return float(self.total_steps)
        pace = (self.total_steps - 1 - cycle_at) / max(1, end - 1 - at)
        return min(float(self.total_steps), cycle_at + (step - at) * pace)

    def squeeze(self, at: int, end: int) -> None:
        """From step ``at`` on, run the rest of the cycle in the steps up to ``end`` (fewer or
        more than it had): the learning rate at ``at`` is unchanged, and step ``end - 1`` takes
        the cycle's last (for ``end > at + 1``; with ``end == at + 1`` the run simply stops
        after ``at``)."""
        if not 0 <= at < end:
            raise ValueError(f"cannot squeeze the cycle from step {at} into an end at {end}")
        self.squeezed = (at, self.cycle_step(at), end)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.squeezed is None:
            return super().get_lr()
        step = self.last_epoch
        self.last_epoch = self.cycle_step(step)  # type: ignore[assignment]
        try:
            return super().get_lr()
        finally:
            self.last_epoch = step


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> OneCycle:
    """One-cycle learning rate, stepped every batch: from ``lr / 25`` up to ``lr`` over the first
    ``warmup`` fraction of ``steps`` (cosine), then down (cosine) to ``lr / 25e4``.

    OneCycleLR divides by the length of each phase, so a warm-up of exactly one step (``steps``
    20 at a warm-up of 0.05, as a short ``--steps`` or budget can give) or of the whole run would
    divide by zero; the warm-up is then two steps, or all but the last (none in a run of two
    steps or one)."""
    warm, share = cfg.warmup * cfg.steps, cfg.warmup
    if warm - 1 == 0 or warm == cfg.steps:
        if cfg.steps <= 2:
            share = 0.0  # too short to warm up
        else:
            share = 2 / cfg.steps if warm - 1 == 0 else (cfg.steps - 1) / cfg.steps
    return OneCycle(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=share)


def lr_curve(cfg: TrainConfig) -> list[float]:
    """The learning rate of every step of a run with ``cfg`` (:func:`build_scheduler`'s), computed
    on a stand-in parameter: no model needed."""
    sched = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr), cfg)
    lrs = []
    for _ in range(cfg.steps):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return lrs


@dataclass
class TrainState:
    """Where a run stands: the step, the best validation CER, the history, skipped batches."""

    step: int = 0
    best_cer: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    #: wall-clock seconds spent in training steps so far (validation and checkpoints not
    #: counted), across resumes: what a budget is checked against
    seconds: float = 0.0

    def payload(self) -> dict[str, Any]:
        """The checkpoint entries that hold this state."""
        return {"step": self.step, "best_cer": self.best_cer, "history": self.history,
                "skipped_batches": self.skipped, "train_seconds": self.seconds}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        return cls(ckpt["step"], ckpt["best_cer"], ckpt["history"], ckpt["skipped_batches"],
                   float(ckpt.get("train_seconds", 0.0)))


def read_resume(path: Path) -> dict[str, Any]:
    """The resume checkpoint at ``path``, or an error that says there is none."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path} to resume from")
    return read_checkpoint(path)


class Session:
    """A model with its optimizer, schedule, grad scaler and :class:`TrainState`: what one
    training run changes, and what its checkpoints hold."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, d: Dist = Dist(),
                 device: torch.device | None = None) -> None:
        self.cfg, self.dist = cfg, d
        self.device = device or resolve_device(cfg.device)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        check_batch(cfg.batch_size, d)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = MambaOCR(model_cfg).to(self.device)
        self.model.backbone.to(memory_format=torch.channels_last)  # faster convolutions
        self.config = built_config(self.model).to_dict()
        # ``net`` is what trains (``model`` wrapped in DDP when distributed); ``model`` is
        # what checkpoints hold, with the same keys either way
        self.net = wrap(self.model, d, self.device)
        if d.enabled:  # the same initial weights everywhere, its own dropout stream per rank
            torch.manual_seed(cfg.seed + 1000 * d.rank)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()
        #: what the batches are drawn from (:func:`ocrlib.train.loaders`), for the resume
        #: checkpoint; None until the training data is known
        self.sources: Sources | None = None

    def checkpoint(self, for_resume: bool) -> dict[str, Any]:
        """The model and what it is; with ``for_resume``, everything to continue training."""
        out: dict[str, Any] = {
            "config": self.config, "train": asdict(self.cfg), "model": self.model.state_dict(),
            **self.state.payload(),
            "origin": {"backbone_pretrained": self.model.backbone.pretrained,
                       "encoder_pretrained": self.model.cfg.encoder.pretrained},
            "numerics": numerics(self.amp_dtype),
        }
        if for_resume:  # a collective when distributed: every rank calls it
            cuda = torch.cuda.get_rng_state().cpu() if self.device.type == "cuda" else None
            rng = {"torch": torch.get_rng_state(), "python": list(random.getstate()), "cuda": cuda}
            out.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                       scaler=self.scaler.state_dict(), rng=rng)
            if self.sources is not None:
                out["data"] = self.sources.to_dict()
            if self.dist.enabled:
                out["rng_ranks"] = gather(rng, self.dist)
        return out

    def resume(self, path: Path, ckpt: dict[str, Any] | None = None) -> None:
        """Continue the run saved at ``path`` (refused if made for another configuration);
        ``ckpt``: its contents, where already read (:func:`read_resume`)."""
        if ckpt is None:
            ckpt = read_resume(path)
        # the cache changes where lines are loaded from, not a number of the run
        saved = {"budget": None, **ckpt.get("train", {}), "cache_mb": self.cfg.cache_mb}
        diffs = (config_differences(ckpt["config"], self.config)
                 + config_differences(saved, asdict(self.cfg)))
        if diffs:
            raise CheckpointMismatchError(
                f"{path} was made for another configuration:\n  " + "\n  ".join(diffs))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self._set_rng(ckpt, path)
        self.state = TrainState.from_checkpoint(ckpt)
        if "train_seconds" not in ckpt and self.cfg.budget is not None:
            # written before the clock was kept: assume the run kept the pace it was fitted to
            self.state.seconds = self.state.step * self.cfg.budget / self.cfg.steps
        log.info("resuming %s at step %d of %d", path, self.state.step, self.cfg.steps)

    def _set_rng(self, ckpt: dict[str, Any], path: Path) -> None:
        """This rank's random state from a resume checkpoint; one written by a run with another
        number of processes resumes too, with rank 0's state seeded apart per rank (only
        dropout draws from it: the batches are a function of the step)."""
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        d = self.dist
        rng = ranks[d.rank] if len(ranks) == d.world else ranks[0]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"])
        random.setstate(_tuplify(rng["python"]))
        if len(ranks) != d.world:
            log.warning("%s was written by %d process(es), this run has %d: the batches continue "
                        "exactly, the dropout random streams do not", path, len(ranks), d.world)
            if d.rank:
                torch.manual_seed(self.cfg.seed + 1000 * d.rank + int(ckpt["step"]))

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Start from another checkpoint's weights (same model) with a fresh optimizer."""
        start = read_checkpoint(path)
        diffs = config_differences(start["config"], self.config)
        if diffs:
            raise CheckpointMismatchError(f"{path} was made for another model:\n  " + "\n  ".join(diffs))
        self.model.load_state_dict(start["model"])
        log.info("starting from the weights of %s", path)

    def step(self, batch: Batch) -> float | None:
        """One training step on ``batch``; returns its CTC loss, or None when not applied."""
        batch = batch.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp_dtype):
            logits = self.net(batch.images)
        loss = ctc_loss(logits, batch.targets, batch.target_lengths, batch.frames)
        d = self.dist
        frame_targets = batch.frame_targets
        cycle = self.scheduler.cycle_step(self.state.step)  # the guidance fades on the cycle
        if d.enabled and cycle < self.cfg.guided_steps:
            # the guided term only where every rank's share has the renderer's alignment (one
            # process drops it for a batch without one): the ranks must call alike collectives
            have = all_sum(torch.tensor([float(frame_targets is not None)]), d)
            frame_targets = frame_targets if int(have.item()) == d.world else None
        total = loss + guided_term(logits, frame_targets, cycle, self.cfg,
                                   (lambda w: all_mean(w, d)) if d.enabled else None)
        # every rank takes the same decision and logs the loss of the whole batch
        both = all_mean(torch.stack([loss.detach(), total.detach()]), d)
        loss = both[0] if d.enabled else loss
        self.optimizer.zero_grad(set_to_none=True)
        applied = False
        if not torch.isfinite(both).all():
            self._skipped("non-finite loss")
        else:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip or math.inf)
            applied = bool(torch.isfinite(gnorm))
            if self.scaler.is_enabled():
                # fp16: the scaler skips a step whose gradients overflowed and lowers its scale;
                # its first steps search for a scale that way. Expected: not a skipped batch.
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if not applied:
                    log.debug("step %d: fp16 gradients overflowed; the scaler lowers its scale",
                              self.state.step)
            elif applied:
                self.optimizer.step()
            else:
                self._skipped("non-finite gradient")
        self.scheduler.step()
        self.state.step += 1
        return loss.item() if applied else None

    def reschedule(self, end: int) -> None:
        """End the run at step ``end`` instead of ``cfg.steps`` (which becomes ``end``), earlier
        or later: the rest of the learning-rate cycle, and of the guided start's fade, is
        squeezed or stretched into the steps left (:meth:`OneCycle.squeeze`)."""
        if not self.state.step < end:
            raise ValueError(f"cannot end at step {end}: the run is at step {self.state.step} "
                             f"of {self.cfg.steps}")
        self.scheduler.squeeze(self.state.step, end)
        self.cfg = dataclasses.replace(self.cfg, steps=end)

    def _skipped(self, why: str) -> None:
        self.state.skipped += 1
        log.warning("step %d: %s, batch skipped (%d so far)", self.state.step, why, self.state.skipped)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x
