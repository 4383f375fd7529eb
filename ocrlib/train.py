"""CTC training that survives interruption (notebook 04).

One step (:meth:`Session.step`): images -> logits ``(B, T, V)`` -> CTC loss over each line's
own frames (plus, early on, the alignment-guided term: :mod:`ocrlib.losses`) -> backward ->
optional gradient clipping -> AdamW -> OneCycleLR (stepped every batch). A batch whose loss or
gradient is not finite is skipped and counted, never applied; under fp16 the grad scaler's
own overflow steps are its business and are not counted.

Resuming is exact: the batches are a pure function of ``(seed, step)``
(:class:`ocrlib.sampler.StepSampler`), and the resume checkpoint carries the model, optimizer,
scheduler, grad-scaler and RNG states and the :class:`TrainState`, so an interrupted run
resumed with ``--resume`` ends where an uninterrupted one does (a budgeted run: as long as
the clock sets the same end, :mod:`ocrlib.budget`).

Launched by ``torchrun``, the same :func:`train` runs on every process with
DistributedDataParallel (:mod:`ocrlib.distributed`): each rank reads its share of the same
global batches, only rank 0 writes, and resuming stays exact for the same number of ranks.

The settings and the named profiles live in :mod:`ocrlib.profiles`; they are re-exported
here (``from ocrlib.train import profiles`` keeps working).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader

from .budget import (
    LENGTHEN_AFTER, MAX_STRETCH, PROBE_STEPS, PROBE_WARMUP, deadline_steps, fit_to_budget,
    resumed_fit, step_seconds,
)
from .checkpoint import save_checkpoint
from .data import OCRDataset, ctc_collate
from .decoding import greedy_decode
from .distributed import (
    Dist, Keyed, ShardSampler, all_mean, broadcast_buffers, describe_failure, gather, setup,
    shard_collate, shard_list, teardown,
)
from .io import atomic_write_text
from .metrics import cer as corpus_cer
from .model import MambaOCR, ModelConfig
from .precision import (  # noqa: F401  (re-exported: older scripts import them from here)
    autocast, cpu_has_fast_bf16, forced_amp, numerics, resolve_amp, resolve_device,
)
from .profiles import Profile, TrainConfig, profile_with, profiles  # noqa: F401  (re-exported)
from .sampler import MixSampler, StepSampler
from .sources import Sources, as_sources, check_disjoint, check_resumed  # noqa: F401
from .session import (  # noqa: F401  (re-exported: notebooks import them from here)
    Session, TrainState, build_optimizer, build_scheduler, lr_curve, read_resume,
)

log = logging.getLogger(__name__)

#: the clock a budgeted run is checked against (a test may stand in its own)
_clock = time.perf_counter


@torch.no_grad()
def evaluate(model: MambaOCR, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None, d: Dist = Dist()) -> dict[str, Any]:
    """Greedy-decode every batch; returns ``{"cer", "n", "texts", "predictions"}``.

    Distributed: each rank decodes its share of the batches, and the texts and predictions of
    all ranks are gathered (in rank order), so every rank computes the same CER.
    """
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
    if d.enabled:
        shares = gather((refs, hyps), d)
        refs, hyps = [t for r, _ in shares for t in r], [t for _, h in shares for t in h]
    return {"cer": corpus_cer(refs, hyps), "n": len(refs), "texts": refs, "predictions": hyps}


def last_path(best: Path) -> Path:
    """The resume checkpoint beside ``best``: ``best_x.pth`` -> ``last_x.pth``."""
    name = best.name
    return best.with_name("last_" + name.removeprefix("best_") if name.startswith("best_")
                          else best.stem + "_last" + best.suffix)


def loaders(model_cfg: ModelConfig, cfg: TrainConfig, train_dir: Path | Sequence[Path],
            val_dir: Path, start: int, skip_bad: bool = False, d: Dist = Dist(),
            mix: Sequence[float] | None = None, total: int | None = None,
            ) -> tuple[DataLoader, DataLoader, Sources]:
    """The training batches from step ``start`` to ``total`` (default ``cfg.steps``), the
    validation batches (by width), and what the training batches are drawn from; distributed,
    this rank's share of each batch (:class:`ocrlib.distributed.ShardSampler`).

    ``train_dir`` may be several sources (folders or LMDBs), mixed in every chunk of batches in
    the proportions ``mix`` (default: their sizes) by :class:`ocrlib.sampler.MixSampler`.
    """
    def dataset(folder: Path, limit: int | None = None) -> OCRDataset:
        return OCRDataset(folder, model_cfg.charset, model_cfg.height, model_cfg.width,
                          model_cfg.time_steps, normalize=model_cfg.normalize, limit=limit,
                          skip_bad=skip_bad, cache_mb=cfg.cache_mb)

    sources = as_sources(train_dir)
    sets = [dataset(src) for src in sources]
    val_set = dataset(val_dir, cfg.val_limit or None)
    train_set: Any = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    bucketed = [w for s in sets for w in s.widths()] if cfg.bucket else None
    data = Sources.of(sources, [len(s) for s in sets], mix)
    sampler: Any
    if len(sets) == 1 and mix is None:
        sampler = StepSampler(len(train_set), cfg.batch_size, cfg.seed, start, total or cfg.steps,
                              bucketed, cfg.bucket or 1)
    else:
        sizes, ratios = list(data.lines), data.ratios()
        sampler = MixSampler(sizes, ratios, cfg.batch_size, cfg.seed, start, total or cfg.steps,
                             bucketed, cfg.bucket or 1)
        if d.is_main:
            for src, n, r in zip(sources, sizes, ratios):
                log.info("mixing %s: %.0f%% of every batch, %d lines (%.1f passes over the run)",
                         src, 100 * r / sum(ratios), n, cfg.steps * cfg.batch_size * r / sum(ratios) / n)
    fixed = model_cfg.width if cfg.fixed_width else None
    collate: Any = functools.partial(ctc_collate, fixed_width=fixed)
    if d.enabled:  # this rank's share of each batch, padded as wide as the whole batch
        wide = [w for s in sets for w in s.input_widths()]
        sampler, train_set = ShardSampler(sampler, d, wide), Keyed(train_set)
        collate = functools.partial(shard_collate, fixed_width=fixed)
    cuda = resolve_device(cfg.device).type == "cuda"
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate,
                              num_workers=cfg.workers, pin_memory=cuda)
    order = sorted(range(len(val_set)), key=val_set.widths().__getitem__)
    val_batches = shard_list([order[k:k + 64] for k in range(0, len(order), 64)], d)
    val_loader = DataLoader(val_set, batch_sampler=val_batches, collate_fn=ctc_collate,
                            num_workers=cfg.workers)
    return train_loader, val_loader, data


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
    train_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    val_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] = "checkpoints/best_mamba_ocr.pth",
    *,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    skip_bad: bool = False,
    mix: Sequence[float] | None = None,
) -> TrainResult:
    """Train (or resume) and write the best and last checkpoints.

    Args:
        model_cfg, train_cfg: what to train and how.
        train_dir, val_dir: labelled folders (``labels.txt``) or LMDBs; they must not
            overlap. ``train_dir`` may be a list of sources, mixed in every batch in the
            proportions ``mix`` (e.g. ``[0.7, 0.3]``; default: the sources' sizes).
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

    Under ``torchrun`` every process runs this; see :mod:`ocrlib.distributed`.
    """
    t_start = time.perf_counter()
    sources = as_sources(train_dir)
    val_dir, best_path = Path(val_dir), Path(out)
    resume_path = last_path(best_path)
    if mix is not None and len(mix) != len(sources):
        raise ValueError(f"{len(mix)} mixing ratios for {len(sources)} training sources")
    for src in sources:
        check_disjoint(src, val_dir)
    d, device = setup(resolve_device(train_cfg.device))
    if d.is_main:
        best_path.parent.mkdir(parents=True, exist_ok=True)
    finished = False
    try:
        saved = read_resume(resume_path) if resume else None
        train_cfg = _fit(model_cfg, train_cfg, sources, val_dir, saved, skip_bad, d, device, mix)
        run = Session(model_cfg, train_cfg, d, device)
        if saved is not None:
            run.resume(resume_path, saved)
        else:
            if init_from is not None:
                run.load_weights(init_from)
            if resume_path.exists() and d.is_main:
                log.info("starting afresh: %s will be replaced (resume=True continues it)",
                         resume_path)
        # a budgeted run may be lengthened (ocrlib.budget.MAX_STRETCH): batches for that many
        limit = int(train_cfg.steps * MAX_STRETCH) if train_cfg.budget else train_cfg.steps
        train_loader, val_loader, run.sources = loaders(model_cfg, train_cfg, sources, val_dir,
                                                        run.state.step, skip_bad, d, mix, limit)
        if saved is not None:
            check_resumed(saved.get("data"), run.sources, resume_path)
        _loop(run, train_loader, val_loader, best_path, resume_path, progress and d.is_main,
              stop_after, limit)
        finished = True
    except Exception as err:
        if d.enabled:
            log.error("rank %d of %d failed: %s", d.rank, d.world, describe_failure(err))
        raise
    finally:
        if finished:
            teardown(d)
    state = run.state
    if state.history and d.is_main:
        try:
            from .viz import plot_history

            plot_history(state.history, best_path.with_name(best_path.stem + "_curves.png"))
        except ImportError as err:  # matplotlib missing (a bare GPU image): the history is saved
            log.warning("training curves not drawn: %s", err)
    return TrainResult(best_path, resume_path, state.step, state.best_cer, state.history,
                       state.skipped, time.perf_counter() - t_start)


def _fit(model_cfg: ModelConfig, cfg: TrainConfig, sources: list[Path], val_dir: Path,
         saved: dict[str, Any] | None, skip_bad: bool, d: Dist, device: torch.device,
         mix: Sequence[float] | None) -> TrainConfig:
    """``cfg`` with as many steps as fit its ``budget`` (:mod:`ocrlib.budget`): timed on a
    throwaway run for a fresh start, read from the resume checkpoint ``saved`` for a resumed
    one."""
    if cfg.budget is None:
        return cfg
    if saved is not None:
        return resumed_fit(cfg, saved)
    # enough batches and scheduled steps for the probe's two passes
    probe_cfg = dataclasses.replace(cfg, steps=max(cfg.steps, 2 * PROBE_STEPS))
    probe = Session(model_cfg, probe_cfg, d, device)
    probe.net.train()
    batches, _, _ = loaders(model_cfg, probe_cfg, sources, val_dir, 0, skip_bad, d, mix)
    seconds = step_seconds(probe, batches)
    del probe, batches
    if d.enabled:  # every rank must fit the same number of steps: their mean step time and
        # budget (a job's deadline, ocrlib train --job-seconds, leaves each rank a budget a few
        # milliseconds apart)
        both = all_mean(torch.tensor([seconds, cfg.budget], dtype=torch.float64, device=device), d)
        seconds, cfg = float(both[0]), dataclasses.replace(cfg, budget=float(both[1]))
    fitted = fit_to_budget(cfg, seconds)
    log.info("%.3f s a step here: %d steps fit in the budget of %.0f s (guided for %d)",
             seconds, fitted.steps, cfg.budget, fitted.guided_steps)
    return fitted


def _loop(run: Session, train_loader: DataLoader, val_loader: DataLoader, best_path: Path,
          resume_path: Path, progress: bool, stop_after: int | None, limit: int) -> None:
    """The training loop of :func:`train`: steps, validation, history and checkpoints (written
    by rank 0 only; every rank takes part in the collectives). A budgeted run checks the clock
    at every resume checkpoint and ends earlier if it is falling behind, or later (up to step
    ``limit``, as far as ``train_loader`` has batches) if it is ahead (:func:`_keep_to_budget`)."""
    from tqdm.auto import tqdm

    state, main = run.state, run.dist.is_main
    history_path = best_path.with_name(best_path.stem + "_history.jsonl")
    run.net.train()
    bar = tqdm(total=run.cfg.steps, initial=state.step, desc="train", unit="step",
               disable=not progress)
    running = None
    # the budget's clock: (step, seconds) at each check, from this process's first timed step
    # (its first few, start-up and new shapes, are not timed, as the probe does not time them)
    warm_until, marks = state.step + PROBE_WARMUP, []
    mark = _clock()
    for batch in train_loader:
        loss = run.step(batch)
        now = _clock()
        state.seconds += now - mark  # the steps' own time: validation and checkpoints not counted
        mark = now
        if loss is not None:
            running = loss if running is None else 0.9 * running + 0.1 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}" if running is not None else "-",
                        cer=f"{state.best_cer:.3f}" if state.best_cer < math.inf else "-")
        step, cfg = state.step, run.cfg
        if step == warm_until:
            marks.append((step, state.seconds))
        validate = step % cfg.eval_every == 0 or step == cfg.steps
        save = step % cfg.save_every == 0 or step == cfg.steps
        if save and cfg.budget is not None and step < cfg.steps and marks and step > marks[-1][0]:
            _keep_to_budget(run, marks, bar, limit)  # a new end is a later step
            marks.append((step, state.seconds))
        if validate:
            broadcast_buffers(run.model, run.dist)  # rank 0's running statistics everywhere
            result = evaluate(run.model, val_loader, run.device, run.amp_dtype, run.dist)
            state.history.append({"step": step, "loss": running, "val_cer": result["cer"],
                                  "lr": run.scheduler.get_last_lr()[0], "skipped": state.skipped})
            if main:
                atomic_write_text(history_path, "".join(json.dumps(h) + "\n" for h in state.history))
                log.info("step %d: loss %.4f, val CER %.4f", step, running or float("nan"),
                         result["cer"])
            if result["cer"] < state.best_cer:
                state.best_cer = result["cer"]
                if main:
                    save_checkpoint(best_path, run.checkpoint(for_resume=False))
        if save:
            ckpt = run.checkpoint(for_resume=True)
            if main:
                save_checkpoint(resume_path, ckpt)
        if validate or save:
            mark = _clock()
        if step >= run.cfg.steps or (stop_after is not None and step >= stop_after):
            break
    bar.close()


def _keep_to_budget(run: Session, marks: list[tuple[int, float]], bar: Any, limit: int) -> None:
    """End a budgeted run earlier or later (:meth:`Session.reschedule`, at most at step
    ``limit``) if the steps left would take it past its budget or leave part of it unused
    (:func:`ocrlib.budget.deadline_steps`), and redraw the progress ``bar`` for the new end.

    ``marks`` holds the step and the seconds spent at the first timed step and at each check
    since. Earlier at the pace of the steps since the check before last (500 steps in the
    ``laptop`` profile), so a slowdown is acted on within two checks: one 250-step window's
    pace varies by 10 % here, and a run shortened on one slow window was lengthened again at
    the next checks. Later only past a quarter of the run and at the slower of that pace and
    the pace since the first timed step. Under torchrun the ranks decide on their mean time
    and paces, so they end alike.
    """
    state = run.state
    spent = state.seconds
    recent, origin = marks[max(0, len(marks) - 2)], marks[0]
    pace = (spent - recent[1]) / (state.step - recent[0])
    overall = (spent - origin[1]) / (state.step - origin[0])
    if run.dist.enabled:
        both = torch.tensor([spent, pace, overall], dtype=torch.float64, device=run.device)
        spent, pace, overall = all_mean(both, run.dist).tolist()
    if not (pace > 0 and overall > 0):
        return
    end = deadline_steps(run.cfg, state.step, spent, pace)  # never later
    if end == run.cfg.steps and state.step >= run.cfg.steps * LENGTHEN_AFTER:
        end = max(end, deadline_steps(run.cfg, state.step, spent, max(pace, overall), limit=limit))
    if end == run.cfg.steps:
        return
    if run.dist.is_main:
        later = end > run.cfg.steps
        # the host's pace drifts (about 10 % between windows here): a new end is routine
        log.info("%s the clock: %.0f s spent at step %d, %.3f s a step lately; the run now "
                 "ends at step %d instead of %d to %s its budget of %.0f s (the rest of the "
                 "schedule is %s)", "ahead of" if later else "behind", spent, state.step,
                 max(pace, overall) if later else pace, end, run.cfg.steps,
                 "fill" if later else "keep to", run.cfg.budget,
                 "stretched" if later else "squeezed")
    run.reschedule(end)
    n = bar.n
    bar.reset(total=end)  # a notebook's bar redraws its length only this way
    bar.update(n)


def train_profile(prof: Profile, train_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  val_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  resume: bool = False, progress: bool = True,
                  init_from: str | os.PathLike[str] | None = None, skip_bad: bool = False,
                  mix: Sequence[float] | None = None) -> TrainResult:
    """Train a profile on its data (see :func:`train`)."""
    return train(prof.model, prof.train, train_dir, val_dir, out, resume=resume,
                 init_from=init_from, progress=progress, skip_bad=skip_bad, mix=mix)
