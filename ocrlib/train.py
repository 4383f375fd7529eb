"""CTC training that survives interruption (notebook 04).

One step: images -> logits ``(B, T, V)`` -> log-softmax, transposed to ``(T, B, V)`` only
for ``CTCLoss(blank=0, zero_infinity=True)`` -> backward -> gradient clipping -> AdamW ->
OneCycleLR (stepped every batch). A batch whose loss or gradient is not finite is skipped
and counted, never applied.

Resuming is exact: the data order is a pure function of ``(seed, epoch)``, and the
checkpoint carries the model, optimizer, scheduler, grad-scaler and RNG states and the
step, so an interrupted run resumed with ``--resume`` ends where an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from .backbone import BackboneConfig
from .checkpoint import (
    CheckpointMismatchError, built_config, config_differences, read_checkpoint, save_checkpoint,
)
from .data import OCRDataset, ctc_collate
from .decoding import greedy_decode
from .encoder import PRETRAINED_MAMBA, EncoderConfig
from .io import atomic_write_text
from .metrics import cer as corpus_cer
from .model import MambaOCR, ModelConfig
from .synth import SynthConfig, read_manifest

log = logging.getLogger(__name__)

Amp = Literal["auto", "off", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        steps: optimizer steps (batches) in the whole run.
        batch_size, lr, weight_decay: the usual; ``lr`` is OneCycleLR's peak.
        grad_clip: clip the gradient norm to this; None: no clipping (non-finite gradients
            are still caught and skipped). Measured on the ``tiny`` profile: clipping at 1.0
            kept a from-scratch ResNet34 + CTC on its all-blank plateau for the whole run
            (CER 0.85 after 300 steps), at 5.0 it reached 0.48 after 250 steps, unclipped
            0.12 (0.05 after 300). So from-scratch profiles do not clip; the pretrained
            ``gpu`` profile clips at 1.0 as the original did.
        warmup: fraction of the steps spent warming up to ``lr``.
        amp: ``"auto"`` (fp16 with a grad scaler on CUDA, bf16 on CPUs with fast bf16,
            else off), ``"off"``, ``"bf16"`` or ``"fp16"`` (CUDA only). The environment
            variable ``OCRLIB_AMP`` overrides it (:func:`forced_amp`).
        eval_every: validate (greedy CER) every this many steps, and at the end.
        val_limit: validate on at most this many validation images.
        save_every: write the resume checkpoint every this many steps, and at the end.
        workers: DataLoader worker processes (0: load in the training process).
        seed: seeds the initialisation, the data order and dropout.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: float = 0.1
    grad_clip: float | None = None
    amp: Amp = "auto"
    eval_every: int = 200
    val_limit: int = 500
    save_every: int = 100
    workers: int = 0
    seed: int = 0
    device: str = "auto"


@dataclass
class Warmup:
    """A first, easy stage: ``steps`` steps on ``n`` images drawn with ``synth`` (one clean
    font, no distortion). From scratch, CTC first learns to emit only blanks and can stay on
    that plateau for hundreds of steps on hard data; on easy data it leaves it within ~150,
    and the main stage starts from those weights."""

    synth: SynthConfig
    n: int
    steps: int


@dataclass
class Profile:
    """A named bundle: model, training and data sizes."""

    name: str
    model: ModelConfig
    train: TrainConfig
    synth: SynthConfig
    sizes: dict[str, int]
    description: str = ""
    warmup: Warmup | None = None


def profiles() -> dict[str, Profile]:
    """The three profiles: ``tiny`` (tests, notebooks), ``laptop`` (CPU demo), ``gpu`` (Colab)."""
    digits = "0123456789"
    return {
        "tiny": Profile(
            "tiny",
            ModelConfig(chars=digits, width=128,
                        encoder=EncoderConfig(d_model=128, n_layers=2, dropout=0.0)),
            # fp32: notebooks and tests reproduce as closely as a CPU allows (bf16 kernels
            # differ between AMX, AVX512-BF16 and emulation)
            TrainConfig(steps=300, batch_size=16, lr=1e-3, warmup=0.05, eval_every=50,
                        val_limit=200, save_every=50, amp="off"),
            # one clean font: a from-scratch CTC model leaves its all-blank plateau within
            # ~150 steps here; with every font and distortion it needs far more
            SynthConfig(chars=digits, min_len=3, max_len=6, max_angle=0.0, max_blur=0.0,
                        max_noise=0.0, fonts=("DejaVu Sans Book",)),
            {"train": 2000, "val": 200, "test": 200},
            "digits, one clean font, 128 px wide, 2 small Mamba layers: ~1.5 min on a laptop CPU",
        ),
        "laptop": Profile(
            # Digits (serial numbers, prices, dates) in every font and distortion, full 320 px
            # width. The full 62-character set does not leave CTC's all-blank plateau within a
            # CPU budget from random weights (measured: still at 900 steps, warm-up included):
            # it is the gpu profile's job, with ImageNet weights.
            "laptop",
            ModelConfig(chars=digits, encoder=EncoderConfig(d_model=256, n_layers=2, dropout=0.1)),
            TrainConfig(steps=1300, batch_size=16, lr=1e-3, warmup=0.05, eval_every=260,
                        val_limit=500, save_every=100),
            SynthConfig(chars=digits, min_len=3, max_len=10, clean_fraction=0.25),
            {"train": 30000, "val": 1000, "test": 1000},
            "digits in every font and distortion, 320 px, 2 Mamba layers, warm-up stage: ~15 min on 2 cores",
            warmup=Warmup(SynthConfig(chars=digits, min_len=3, max_len=10, max_angle=0.0,
                                      max_blur=0.0, max_noise=0.0, fonts=("DejaVu Sans Book",)),
                          n=6000, steps=300),
        ),
        "gpu": Profile(
            "gpu",
            ModelConfig(
                backbone=BackboneConfig(pretrained=True, adaptation="adapter", freeze="auto"),
                encoder=EncoderConfig(pretrained=PRETRAINED_MAMBA, n_layers=6, lora_r=16,
                                      lora_alpha=32, dropout=0.1)),
            TrainConfig(steps=20000, batch_size=64, lr=3e-4, grad_clip=1.0, eval_every=1000,
                        val_limit=2000, save_every=500, workers=2),
            SynthConfig(),
            {"train": 200000, "val": 2000, "test": 2000},
            "ImageNet ResNet34 (freeze strategy) + mamba-130m (6 layers, LoRA), AMP: Colab T4 or better",
        ),
    }


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix units (AMX or AVX512-BF16; Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


AMP_ENV = "OCRLIB_AMP"


def forced_amp() -> Amp | None:
    """The numeric setting forced from outside with ``OCRLIB_AMP=off|bf16|fp16|auto``, or None.

    It overrides every profile's and command's ``amp``, so that a whole test run (notebooks
    included) can be repeated under another numeric setting.

    Raises:
        ValueError: naming the variable, for any other value.
    """
    value = os.environ.get(AMP_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"{AMP_ENV}={value!r}: expected off, bf16, fp16 or auto")
    return value  # type: ignore[return-value]


def resolve_amp(amp: Amp, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision).

    ``OCRLIB_AMP``, when set, replaces ``amp`` (:func:`forced_amp`).
    """
    forced = forced_amp()
    if forced is not None and forced != amp:
        _log_forced_once(forced, amp)
        amp = forced
    if amp == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use 'bf16' on a CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


@functools.lru_cache(maxsize=None)
def _log_forced_once(forced: str, asked: str) -> None:
    log.info("%s=%s replaces amp=%r", AMP_ENV, forced, asked)


def numerics(amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What decides the rounding of a run besides the code: precision, threads, torch, CPU bf16.

    Stored in checkpoints: a model trained under other numerics is another model.
    """
    return {"amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0]}


class StepSampler(Sampler[list[int]]):
    """Batches of indices for steps ``start .. total-1``; step s is batch ``s % per_epoch`` of
    epoch ``s // per_epoch``, whose order is a permutation seeded by ``(seed, epoch)``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int) -> None:
        if n < batch_size:
            raise ValueError(f"{n} training samples are fewer than one batch of {batch_size}")
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per_epoch = n // batch_size

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, epoch = None, -1
        for step in range(self.start, self.total):
            e, pos = divmod(step, self.per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 100003 + e)
                perm, epoch = torch.randperm(self.n, generator=g).tolist(), e
            yield perm[pos * self.bs:(pos + 1) * self.bs]


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Mean CTC loss of a batch.

    Shape:
        logits: ``(B, T, V)``; targets: ``(sum of lengths,)``; target_lengths: ``(B,)``
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, V), as CTCLoss wants
    T, B = log_probs.shape[:2]
    input_lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)


@torch.no_grad()
def evaluate(model: MambaOCR, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Greedy-decode every batch; returns ``{"cer", "n", "texts", "predictions"}``."""
    was_training = model.training
    model.eval()
    refs, hyps = [], []
    for batch in loader:
        with _autocast(device, amp_dtype):
            logits = model(batch.images.to(device))
        hyps += [d.text for d in greedy_decode(logits.float().log_softmax(-1), model.charset)]
        refs += batch.texts
    model.train(was_training)
    return {"cer": corpus_cer(refs, hyps), "n": len(refs), "texts": refs, "predictions": hyps}


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def last_path(best: Path) -> Path:
    """The resume checkpoint beside ``best``: ``best_x.pth`` -> ``last_x.pth``."""
    name = best.name
    return best.with_name("last_" + name.removeprefix("best_") if name.startswith("best_")
                          else best.stem + "_last" + best.suffix)


def _check_disjoint(train_dir: Path, val_dir: Path) -> None:
    """Refuse a validation set that is the training set or was drawn from its random stream."""
    if train_dir.resolve() == val_dir.resolve():
        raise ValueError(f"the validation folder is the training folder ({train_dir})")
    a, b = read_manifest(train_dir), read_manifest(val_dir)
    if a and b and (a["seed"], a["stream"]) == (b["seed"], b["stream"]):
        raise ValueError(f"{val_dir} and {train_dir} were generated from the same seed and split: "
                         "the validation set would repeat training samples")


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
            fresh optimizer and schedule: the second stage of a curriculum.
        progress: show a tqdm bar with loss and CER.
        stop_after: stop (as if killed) after this global step; for tests and notebooks.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    train_dir, val_dir, best_path = Path(train_dir), Path(val_dir), Path(out)
    resume_path = last_path(best_path)
    history_path = best_path.with_name(best_path.stem + "_history.jsonl")
    _check_disjoint(train_dir, val_dir)
    best_path.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(train_cfg.device)
    amp_dtype = resolve_amp(train_cfg.amp, device)

    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    model = MambaOCR(model_cfg).to(device)
    cfg_dict = built_config(model).to_dict()
    charset = model.charset
    steps_t = model_cfg.time_steps
    train_set = OCRDataset(train_dir, charset, model_cfg.height, model_cfg.width, steps_t)
    val_set = OCRDataset(val_dir, charset, model_cfg.height, model_cfg.width, steps_t)
    if train_cfg.val_limit and len(val_set) > train_cfg.val_limit:
        val_set.items = val_set.items[: train_cfg.val_limit]

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms, A_log, D: no weight decay
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train_cfg.lr, total_steps=train_cfg.steps, pct_start=train_cfg.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    step, best_cer, history, skipped = 0, math.inf, [], 0
    train_dict = asdict(train_cfg)
    if resume:
        if not resume_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {resume_path} to resume from")
        ckpt = read_checkpoint(resume_path)
        diffs = config_differences(ckpt["config"], cfg_dict) + config_differences(
            ckpt.get("train", {}), train_dict)
        if diffs:
            raise CheckpointMismatchError(
                f"{resume_path} was made for another configuration:\n  " + "\n  ".join(diffs))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        random.setstate(_tuplify(ckpt["rng"]["python"]))
        step, best_cer, history, skipped = (ckpt["step"], ckpt["best_cer"], ckpt["history"],
                                            ckpt["skipped_batches"])
        log.info("resuming %s at step %d of %d", resume_path, step, train_cfg.steps)
    else:
        if init_from is not None:
            start = read_checkpoint(init_from)
            diffs = config_differences(start["config"], cfg_dict)
            if diffs:
                raise CheckpointMismatchError(
                    f"{init_from} was made for another model:\n  " + "\n  ".join(diffs))
            model.load_state_dict(start["model"])
            log.info("starting from the weights of %s", init_from)
        if resume_path.exists():
            log.info("starting afresh: %s will be replaced (resume=True continues it)", resume_path)

    def payload(for_resume: bool) -> dict[str, Any]:
        """The model and what it is; with ``for_resume``, everything to continue training."""
        out: dict[str, Any] = {
            "config": cfg_dict, "train": train_dict, "model": model.state_dict(),
            "step": step, "best_cer": best_cer, "history": history, "skipped_batches": skipped,
            "origin": {"backbone_pretrained": model.backbone.pretrained,
                       "encoder_pretrained": model_cfg.encoder.pretrained},
            "numerics": numerics(amp_dtype),
        }
        if for_resume:
            out.update(
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                rng={"torch": torch.get_rng_state(), "python": list(random.getstate()),
                     "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None})
        return out

    loader = DataLoader(
        train_set, batch_sampler=StepSampler(len(train_set), train_cfg.batch_size, train_cfg.seed,
                                             step, train_cfg.steps),
        collate_fn=ctc_collate, num_workers=train_cfg.workers)
    val_loader = DataLoader(val_set, batch_size=64, collate_fn=ctc_collate,
                            num_workers=train_cfg.workers)
    model.train()
    bar = tqdm(total=train_cfg.steps, initial=step, desc="train", unit="step", disable=not progress)
    running = None
    for batch in loader:
        batch = batch.to(device)
        with _autocast(device, amp_dtype):
            logits = model(batch.images)
        loss = ctc_loss(logits, batch.targets, batch.target_lengths)
        optimizer.zero_grad(set_to_none=True)
        applied = False
        if torch.isfinite(loss):
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip or math.inf)
            if torch.isfinite(norm):
                scaler.step(optimizer)
                applied = True
            scaler.update()
        if not applied:
            skipped += 1
            log.warning("step %d: non-finite loss or gradient, batch skipped (%d so far)", step, skipped)
        scheduler.step()
        step += 1
        if applied:
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}" if running is not None else "-",
                        cer=f"{best_cer:.3f}" if best_cer < math.inf else "-")
        if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
            result = evaluate(model, val_loader, device, amp_dtype)
            history.append({"step": step, "loss": running, "val_cer": result["cer"],
                            "lr": scheduler.get_last_lr()[0], "skipped": skipped})
            atomic_write_text(history_path, "".join(json.dumps(h) + "\n" for h in history))
            log.info("step %d: loss %.4f, val CER %.4f", step, running or float("nan"), result["cer"])
            if result["cer"] < best_cer:
                best_cer = result["cer"]
                save_checkpoint(best_path, payload(for_resume=False))
        if step % train_cfg.save_every == 0 or step == train_cfg.steps:
            save_checkpoint(resume_path, payload(for_resume=True))
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    if history:
        plot_history(history, best_path.with_name(best_path.stem + "_curves.png"))
    return TrainResult(best_path, resume_path, step, best_cer, history, skipped,
                       time.perf_counter() - t_start)


def train_profile(
    prof: Profile,
    train_dir: str | os.PathLike[str],
    val_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    warmup_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a profile: its warm-up stage first (when it has one and ``warmup_dir`` is given,
    unless resuming the main stage), then the main stage from the warm-up weights."""
    out = Path(out)
    init = None
    if prof.warmup is not None and warmup_dir is not None and not (resume and last_path(out).exists()):
        stage = copy.deepcopy(prof.train)
        stage.steps = prof.warmup.steps
        stage.eval_every = stage.save_every = prof.warmup.steps
        log.info("warm-up stage: %d steps on %s", stage.steps, warmup_dir)
        name = (out.name.replace("best_", "best_warmup_", 1) if out.name.startswith("best_")
                else "warmup_" + out.name)
        init = train(prof.model, stage, warmup_dir, val_dir, out.with_name(name),
                     progress=progress).last
    return train(prof.model, prof.train, train_dir, val_dir, out, resume=resume, init_from=init,
                 progress=progress)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def plot_history(history: list[dict[str, Any]], path: str | os.PathLike[str] | None = None):
    """Loss and validation CER against the step; saved as PNG when ``path`` is given."""
    if path is not None:
        from .viz import use_file_backend

        use_file_backend()
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.8))
    a.plot(steps, [h["loss"] for h in history], marker="o")
    a.set(xlabel="step", ylabel="CTC loss (running)", title="training loss")
    b.plot(steps, [h["val_cer"] for h in history], marker="o", color="tab:red")
    b.set(xlabel="step", ylabel="CER", title="validation CER (greedy)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig


def profile_with(name: str, **train_overrides: Any) -> Profile:
    """A copy of a profile with some training settings changed."""
    prof = copy.deepcopy(profiles()[name])
    for k, v in train_overrides.items():
        if v is not None:
            setattr(prof.train, k, v)
    return prof

