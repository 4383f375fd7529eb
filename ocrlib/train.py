"""CTC training that survives interruption (notebook 04).

One step (:meth:`Session.step`): images -> logits ``(B, T, V)`` -> CTC loss over each line's
own frames (plus, early on, the alignment-guided term: :mod:`ocrlib.losses`) -> backward ->
optional gradient clipping -> AdamW -> OneCycleLR (stepped every batch). A batch whose loss or
gradient is not finite is skipped and counted, never applied; under fp16 the grad scaler's
own overflow steps are its business and are not counted.

Resuming is exact: the batches are a pure function of ``(seed, step)``
(:class:`ocrlib.sampler.StepSampler`), and the resume checkpoint carries the model, optimizer,
scheduler, grad-scaler and RNG states and the :class:`TrainState`, so an interrupted run
resumed with ``--resume`` ends where an uninterrupted one does.

The settings and the named profiles live in :mod:`ocrlib.profiles`; they are re-exported
here (``from ocrlib.train import profiles`` keeps working).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .checkpoint import (
    CheckpointMismatchError, built_config, config_differences, read_checkpoint, save_checkpoint,
)
from .data import Batch, OCRDataset, ctc_collate
from .decoding import greedy_decode
from .io import atomic_write_text
from .losses import ctc_loss, guided_term
from .metrics import cer as corpus_cer
from .model import MambaOCR, ModelConfig
from .precision import (  # noqa: F401  (re-exported: older scripts import them from here)
    autocast, cpu_has_fast_bf16, forced_amp, numerics, resolve_amp, resolve_device,
)
from .profiles import Profile, TrainConfig, profile_with, profiles  # noqa: F401  (re-exported)
from .sampler import StepSampler
from .folder import read_manifest

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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig
                    ) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle learning rate, stepped every batch: from ``lr / 25`` up to ``lr`` over the first
    ``warmup`` fraction of ``steps`` (cosine), then down (cosine) to ``lr / 25e4``."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps,
                                               pct_start=cfg.warmup)


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

    def payload(self) -> dict[str, Any]:
        """The checkpoint entries that hold this state."""
        return {"step": self.step, "best_cer": self.best_cer, "history": self.history,
                "skipped_batches": self.skipped}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        return cls(ckpt["step"], ckpt["best_cer"], ckpt["history"], ckpt["skipped_batches"])


class Session:
    """A model with its optimizer, schedule, grad scaler and :class:`TrainState`: what one
    training run changes, and what its checkpoints hold."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = MambaOCR(model_cfg).to(self.device)
        self.model.backbone.to(memory_format=torch.channels_last)  # faster convolutions
        self.config = built_config(self.model).to_dict()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()

    def checkpoint(self, for_resume: bool) -> dict[str, Any]:
        """The model and what it is; with ``for_resume``, everything to continue training."""
        out: dict[str, Any] = {
            "config": self.config, "train": asdict(self.cfg), "model": self.model.state_dict(),
            **self.state.payload(),
            "origin": {"backbone_pretrained": self.model.backbone.pretrained,
                       "encoder_pretrained": self.model.cfg.encoder.pretrained},
            "numerics": numerics(self.amp_dtype),
        }
        if for_resume:
            cuda = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
            out.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                       scaler=self.scaler.state_dict(),
                       rng={"torch": torch.get_rng_state(), "python": list(random.getstate()),
                            "cuda": cuda})
        return out

    def resume(self, path: Path) -> None:
        """Continue the run saved at ``path`` (refused if made for another configuration)."""
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path} to resume from")
        ckpt = read_checkpoint(path)
        diffs = (config_differences(ckpt["config"], self.config)
                 + config_differences(ckpt.get("train", {}), asdict(self.cfg)))
        if diffs:
            raise CheckpointMismatchError(
                f"{path} was made for another configuration:\n  " + "\n  ".join(diffs))
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        random.setstate(_tuplify(ckpt["rng"]["python"]))
        self.state = TrainState.from_checkpoint(ckpt)
        log.info("resuming %s at step %d of %d", path, self.state.step, self.cfg.steps)

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
            logits = self.model(batch.images)
        loss = ctc_loss(logits, batch.targets, batch.target_lengths, batch.frames)
        total = loss + guided_term(logits, batch.frame_targets, self.state.step, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        applied = False
        if not torch.isfinite(total):
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

    def _skipped(self, why: str) -> None:
        self.state.skipped += 1
        log.warning("step %d: %s, batch skipped (%d so far)", self.state.step, why, self.state.skipped)


@torch.no_grad()
def evaluate(model: MambaOCR, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Greedy-decode every batch; returns ``{"cer", "n", "texts", "predictions"}``."""
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    for batch in loader:
        with autocast(device, amp_dtype):
            logits = model(batch.images.to(device))
        hyps += [d.text for d in greedy_decode(logits.float().log_softmax(-1), model.charset,
                                               batch.frames)]
        refs += batch.texts
    model.train(was_training)
    return {"cer": corpus_cer(refs, hyps), "n": len(refs), "texts": refs, "predictions": hyps}


def last_path(best: Path) -> Path:
    """The resume checkpoint beside ``best``: ``best_x.pth`` -> ``last_x.pth``."""
    name = best.name
    return best.with_name("last_" + name.removeprefix("best_") if name.startswith("best_")
                          else best.stem + "_last" + best.suffix)


def check_disjoint(train_dir: Path, val_dir: Path) -> None:
    """Refuse a validation set that is the training set or was drawn from its random stream."""
    if train_dir.resolve() == val_dir.resolve():
        raise ValueError(f"the validation folder is the training folder ({train_dir})")
    a, b = read_manifest(train_dir), read_manifest(val_dir)
    if a and b and (a["seed"], a["stream"]) == (b["seed"], b["stream"]):
        raise ValueError(f"{val_dir} and {train_dir} were generated from the same seed and split: "
                         "the validation set would repeat training samples")


def loaders(model_cfg: ModelConfig, cfg: TrainConfig, train_dir: Path, val_dir: Path,
            start: int, skip_bad: bool = False) -> tuple[DataLoader, DataLoader]:
    """The training batches from step ``start`` on, and the validation batches (by width)."""
    charset, norm = model_cfg.charset, model_cfg.normalize
    train_set = OCRDataset(train_dir, charset, model_cfg.height, model_cfg.width,
                           model_cfg.time_steps, normalize=norm, skip_bad=skip_bad)
    val_set = OCRDataset(val_dir, charset, model_cfg.height, model_cfg.width,
                         model_cfg.time_steps, normalize=norm, limit=cfg.val_limit or None,
                         skip_bad=skip_bad)
    widths = train_set.widths() if cfg.bucket else None
    sampler = StepSampler(len(train_set), cfg.batch_size, cfg.seed, start, cfg.steps, widths,
                          cfg.bucket or 1)
    collate = functools.partial(ctc_collate, fixed_width=model_cfg.width if cfg.fixed_width else None)
    cuda = resolve_device(cfg.device).type == "cuda"
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate,
                              num_workers=cfg.workers, pin_memory=cuda)
    order = sorted(range(len(val_set)), key=val_set.widths().__getitem__)
    val_loader = DataLoader(val_set, batch_sampler=[order[k:k + 64] for k in range(0, len(order), 64)],
                            collate_fn=ctc_collate, num_workers=cfg.workers)
    return train_loader, val_loader


@dataclass
class TrainResult:
    """What :func:`train` did."""

    best: Path
    last: Path
    step: int
    best_cer: float
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_batches: int = 0
    seconds: float = 0.0


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_dir: str | os.PathLike[str],
    val_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] = "checkpoints/best_mamba_ocr.pth",
    *,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    skip_bad: bool = False,
) -> TrainResult:
    """Train (or resume) and write the best and last checkpoints.

    Args:
        model_cfg, train_cfg: what to train and how.
        train_dir, val_dir: labelled folders (``labels.txt``); they must not overlap.
        out: the best-CER checkpoint; the resume checkpoint goes beside it (:func:`last_path`),
            the history to ``<out stem>_history.jsonl`` and curves to ``<out stem>_curves.png``.
        resume: continue from the resume checkpoint (refused if it was made for another
            model or training configuration).
        init_from: start from this checkpoint's weights (same model configuration) with a
            fresh optimizer and schedule: fine-tuning, or the next stage of a curriculum.
        progress: show a tqdm bar with loss and CER.
        stop_after: stop (as if killed) after this global step; for tests and notebooks.
        skip_bad: train without the bad samples of either folder (each named in the log)
            instead of stopping with an error that names them all.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    train_dir, val_dir, best_path = Path(train_dir), Path(val_dir), Path(out)
    resume_path = last_path(best_path)
    history_path = best_path.with_name(best_path.stem + "_history.jsonl")
    check_disjoint(train_dir, val_dir)
    best_path.parent.mkdir(parents=True, exist_ok=True)
    run = Session(model_cfg, train_cfg)
    if resume:
        run.resume(resume_path)
    else:
        if init_from is not None:
            run.load_weights(init_from)
        if resume_path.exists():
            log.info("starting afresh: %s will be replaced (resume=True continues it)", resume_path)
    state = run.state
    train_loader, val_loader = loaders(model_cfg, train_cfg, train_dir, val_dir, state.step,
                                       skip_bad)
    run.model.train()
    bar = tqdm(total=train_cfg.steps, initial=state.step, desc="train", unit="step",
               disable=not progress)
    running = None
    for batch in train_loader:
        loss = run.step(batch)
        if loss is not None:
            running = loss if running is None else 0.9 * running + 0.1 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}" if running is not None else "-",
                        cer=f"{state.best_cer:.3f}" if state.best_cer < math.inf else "-")
        step = state.step
        if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
            result = evaluate(run.model, val_loader, run.device, run.amp_dtype)
            state.history.append({"step": step, "loss": running, "val_cer": result["cer"],
                                  "lr": run.scheduler.get_last_lr()[0], "skipped": state.skipped})
            atomic_write_text(history_path, "".join(json.dumps(h) + "\n" for h in state.history))
            log.info("step %d: loss %.4f, val CER %.4f", step, running or float("nan"), result["cer"])
            if result["cer"] < state.best_cer:
                state.best_cer = result["cer"]
                save_checkpoint(best_path, run.checkpoint(for_resume=False))
        if step % train_cfg.save_every == 0 or step == train_cfg.steps:
            save_checkpoint(resume_path, run.checkpoint(for_resume=True))
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    if state.history:
        try:
            from .viz import plot_history

            plot_history(state.history, best_path.with_name(best_path.stem + "_curves.png"))
        except ImportError as err:  # matplotlib missing (a bare GPU image): the history is saved
            log.warning("training curves not drawn: %s", err)
    return TrainResult(best_path, resume_path, state.step, state.best_cer, state.history,
                       state.skipped, time.perf_counter() - t_start)


def train_profile(prof: Profile, train_dir: str | os.PathLike[str], val_dir: str | os.PathLike[str],
                  out: str | os.PathLike[str], *, resume: bool = False, progress: bool = True,
                  init_from: str | os.PathLike[str] | None = None,
                  skip_bad: bool = False) -> TrainResult:
    """Train a profile on its data folders (see :func:`train`)."""
    return train(prof.model, prof.train, train_dir, val_dir, out, resume=resume,
                 init_from=init_from, progress=progress, skip_bad=skip_bad)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x
