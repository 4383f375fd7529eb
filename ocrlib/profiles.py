"""Training settings and the named profiles that bundle a model, its training and its data.

``tiny`` (tests and notebooks, about a minute and a half), ``laptop`` (``make demo``: the full
charset from random weights on a CPU) and ``gpu`` (pretrained ImageNet ResNet34 and
mamba-130m, Colab). :func:`profile_with` copies one with some training settings changed,
:func:`with_settings` with any setting changed (``encoder.bidirectional=true``: benchmarks that
try a lever).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backbone import BackboneConfig
from .charset import DEFAULT_CHARS
from .encoder import PRETRAINED_MAMBA, EncoderConfig
from .model import ModelConfig
from .precision import Amp
from .synth import Effects, SynthConfig


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        steps: optimizer steps (batches) in the whole run; with ``budget``, the reference
            that ``guided_steps`` is a share of.
        batch_size, lr, weight_decay: the usual; ``lr`` is OneCycleLR's peak.
        grad_clip: clip the gradient norm to this; None: no clipping (non-finite gradients
            are still caught and skipped). Measured on the ``tiny`` profile: clipping at 1.0
            kept a from-scratch ResNet34 + CTC on its all-blank plateau for the whole run
            (CER 0.85 after 300 steps), at 5.0 it reached 0.48 after 250 steps, unclipped
            0.12 (0.05 after 300). So from-scratch profiles do not clip; the pretrained
            ``gpu`` profile clips at 1.0 as the original did.
        warmup: fraction of the steps spent warming up to ``lr``.
        amp: ``"auto"`` (bf16 on CUDA where supported, else fp16 with a grad scaler; bf16 on
            CPUs with native bf16; else off), ``"off"``, ``"bf16"`` or ``"fp16"`` (CUDA
            only). The environment variable ``OCRLIB_AMP`` overrides it
            (:func:`ocrlib.precision.forced_amp`).
        eval_every: validate (greedy CER) every this many steps, and at the end.
        val_limit: validate on at most this many validation images.
        save_every: write the resume checkpoint every this many steps, and at the end.
        bucket: batch lines of similar widths together, sorting chunks of this many batches
            by width (:class:`ocrlib.sampler.StepSampler`); 0: batches in plain random order.
        guided_steps, guided_weight, guided_blank_weight: the alignment-guided start
            (:func:`ocrlib.losses.guided_term`): for the first ``guided_steps`` steps, a
            frame-wise cross-entropy against the generator's character positions is added to
            the CTC loss, its weight fading from ``guided_weight`` to 0 (the blank frames
            weighted ``guided_blank_weight``; :func:`ocrlib.data.alignment_targets`). Sets
            without recorded positions train on CTC alone.
        fixed_width: pad every training line to the model's width and count every frame, as
            the original project did, instead of reading each line at its own width (kept
            for comparisons: the padding frames teach the model to emit blanks).
        budget: seconds the training steps may take, or None. If set, a fresh run first times
            a few steps of a throwaway copy of itself, then trains for as many steps as fit
            (:mod:`ocrlib.budget`; validation and checkpoints are not counted), with
            ``guided_steps`` scaled to match: the same recipe fills the time on a fast machine
            and keeps to it on a slow one. If the machine then turns out slower or faster than
            timed, the run ends earlier or later (by at most half), its schedule squeezed or
            stretched into the steps left, so that it ends within 5 % of its budget.
        workers: DataLoader worker processes (0: load in the training process).
        cache_mb: keep up to this many megabytes of each set's prepared lines in memory
            (:class:`ocrlib.data.OCRDataset`), so that a line read again is not decoded and
            normalised again (each worker process keeps its own); 0: none.
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
    bucket: int = 32
    guided_steps: int = 0
    guided_weight: float = 1.0
    guided_blank_weight: float = 1.0
    fixed_width: bool = False
    budget: float | None = None
    workers: int = 0
    cache_mb: float = 0.0
    seed: int = 0
    device: str = "auto"


@dataclass
class Profile:
    """A named bundle: model, training, the look of its data and the sizes of its splits."""

    name: str
    model: ModelConfig
    train: TrainConfig
    synth: SynthConfig
    sizes: dict[str, int]
    description: str = ""


def profiles() -> dict[str, Profile]:
    """The profiles: ``tiny`` (tests, notebooks), ``laptop`` (the CPU demo), ``gpu`` (Colab)."""
    return {
        "tiny": Profile(
            "tiny",
            ModelConfig(chars=DEFAULT_CHARS, width=160, backbone=BackboneConfig(width=32),
                        encoder=EncoderConfig(d_model=128, n_layers=2, dropout=0.0)),
            # fp32: notebooks and tests reproduce as closely as a CPU allows (bf16 kernels
            # differ between AMX, AVX512-BF16 and emulation)
            TrainConfig(steps=400, batch_size=16, lr=1e-3, warmup=0.05, eval_every=50,
                        val_limit=200, save_every=50, amp="off", guided_steps=400),
            SynthConfig(min_len=1, max_len=6, max_angle=0.0, max_blur=0.0, max_noise=0.0,
                        fonts=("DejaVu Sans Book",), effects=Effects.none()),
            {"train": 3000, "val": 200, "test": 200},
            "0-9a-zA-Z in one clean font, lines up to 160 px, small model: ~1.5 min on a laptop CPU",
        ),
        "laptop": Profile(
            # The full charset from random weights in every font and distortion, on 2 CPU cores.
            # What gets it off CTC's all-blank plateau and through the budget, each measured
            # (benchmarks/RESULTS.md): grey, standardised, ink-bright input; lines at their own
            # width (no padding to learn as blank); residual blocks that start as the identity;
            # no dropout; the renderer's character positions as frame targets beside CTC, fading
            # out; a ResNet34 at half width (all 34 layers: twice the steps in the budget). And
            # for text from other generators: 30 % of the lines cropped to their ink, as a text
            # detector crops (trained on font-box crops alone, it misread such lines 3x as often);
            # and the default effects' cluttered scenes behind a fifth of the lines (trained
            # without them it read another generator's lines on photographs at CER 0.5-0.7),
            # and strips of real photographs behind 15 % (another generator's plain lines:
            # 0.161-0.163 -> 0.147-0.155 over three seeds).
            "laptop",
            ModelConfig(chars=DEFAULT_CHARS, backbone=BackboneConfig(width=32),
                        encoder=EncoderConfig(d_model=256, n_layers=2, dropout=0.0)),
            # As many steps as fit in 25 minutes on this machine (ocrlib.budget): 11,750 on a
            # 2-core EPYC at 0.12 s a step, 4,500 where a step takes 0.32 s (the same
            # kind of machine, another day); the 5,000 steps the schedule is written for took
            # 14-29 minutes. 8,000 steps against 5,000 (seed 0): own test 0.117 -> 0.104,
            # another generator's lines 0.155 -> 0.141 (benchmarks/RESULTS.md). 25 minutes
            # leave make demo's data, probe, validation and evaluation (about 2.5 minutes
            # here) and the clock's 5 % slack inside its 30; where they take longer (a CPU
            # without AVX-512: 6.4 minutes), make demo gives the training less
            # (ocrlib train --job-seconds, ocrlib.budget.job_budget).
            # Lines kept in memory after their first read (about 700 MB): loading them again
            # was 15 % of a step (benchmarks/RESULTS.md, "Faster steps"). A peak learning rate
            # of 1.4e-3 instead of 7e-4 (the guided start leaves the plateau either way): own
            # test 0.061 -> 0.058, every other set as well or better (seed 2, RESULTS.md).
            TrainConfig(steps=5000, batch_size=32, lr=1.4e-3, warmup=0.05, eval_every=1000,
                        val_limit=500, save_every=250, guided_steps=5000, budget=1500.0,
                        cache_mb=1024.0),
            SynthConfig(min_len=1, max_len=12, clean_fraction=0.25, decorative_weight=0.5,
                        vertical_margin=(-0.05, 0.5), tight_fraction=0.3),
            {"train": 48000, "val": 500, "test": 1000},
            "0-9a-zA-Z in 85 font families and every distortion, tested on 11 unseen families, "
            "half-width ResNet34 + 2 Mamba layers, trained for 25 min: ~27 min on 2 cores",
        ),
        "gpu": Profile(
            "gpu",
            ModelConfig(
                chars=DEFAULT_CHARS,
                backbone=BackboneConfig(pretrained=True, adaptation="adapter", freeze="auto"),
                encoder=EncoderConfig(pretrained=PRETRAINED_MAMBA, n_layers=6, lora_r=16,
                                      lora_alpha=32, dropout=0.1)),
            TrainConfig(steps=20000, batch_size=64, lr=3e-4, grad_clip=1.0, eval_every=1000,
                        val_limit=2000, save_every=500, workers=2, guided_steps=2000),
            SynthConfig(min_len=1, max_len=12, clean_fraction=0.1),
            {"train": 200000, "val": 2000, "test": 2000},
            "ImageNet ResNet34 (freeze strategy) + mamba-130m (6 layers, LoRA), AMP: Colab T4 or better",
        ),
    }


def profile_with(name: str, **train_overrides: Any) -> Profile:
    """A copy of profile ``name`` with some training settings changed (None: unchanged).

    Raises:
        KeyError: naming the known profiles, for an unknown name.
        AttributeError: for a setting :class:`TrainConfig` does not have.
    """
    known = profiles()
    if name not in known:
        raise KeyError(f"unknown profile {name!r}; profiles are {sorted(known)}")
    prof = copy.deepcopy(known[name])
    for k, v in train_overrides.items():
        if not hasattr(prof.train, k):
            raise AttributeError(f"TrainConfig has no setting {k!r}")
        if v is not None:
            setattr(prof.train, k, v)
    return prof


#: What ``SECTION.`` in a setting of :func:`with_settings` names.
SECTIONS = ("model", "backbone", "encoder", "train", "synth", "effects", "sizes")


def with_settings(prof: Profile, settings: Sequence[str]) -> Profile:
    """A copy of ``prof`` with settings ``SECTION.KEY=VALUE`` changed.

    ``SECTION`` is one of :data:`SECTIONS` (``backbone`` and ``encoder`` are the model's,
    ``effects`` the synth's); ``VALUE`` is read as JSON (``true``, ``0.1``, ``[0, 0.5]``, a
    JSON list becoming a tuple), else taken as a string. ``encoder.bidirectional=true``,
    ``sizes.train=96000``, ``synth.clean_fraction=0.1``.

    Raises:
        ValueError: naming the setting, for a malformed one, an unknown section or a key the
            section does not have (with the keys it has).
    """
    prof = copy.deepcopy(prof)
    parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for setting in settings:
        key, sep, text = setting.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"setting {setting!r}: expected SECTION.KEY=VALUE, e.g. "
                             "encoder.bidirectional=true")
        if section not in parts:
            raise ValueError(f"setting {setting!r}: unknown section {section!r}; sections are "
                             f"{', '.join(SECTIONS)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        parts[section][name] = tuple(value) if isinstance(value, list) else value
    for name, n in parts["sizes"].items():
        if name not in prof.sizes or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"setting sizes.{name}={n!r}: sizes are whole numbers of lines "
                             f"for the splits {', '.join(prof.sizes)}")
    prof.sizes.update(parts["sizes"])
    model = prof.model
    prof.model = _replaced("model", model, parts["model"])
    prof.model = dataclasses.replace(
        prof.model, backbone=_replaced("backbone", model.backbone, parts["backbone"]),
        encoder=_replaced("encoder", model.encoder, parts["encoder"]))
    prof.train = _replaced("train", prof.train, parts["train"])
    effects = _replaced("effects", prof.synth.effects, parts["effects"])
    synth = _replaced("synth", prof.synth, parts["synth"])
    prof.synth = dataclasses.replace(synth, effects=effects)
    return prof


def _replaced(section: str, config: Any, changes: dict[str, Any]) -> Any:
    """``config`` (a dataclass) with ``changes``; ValueError naming an unknown key."""
    nested = ("backbone", "encoder", "effects")  # sections of their own
    known = [f.name for f in dataclasses.fields(config) if f.name not in nested]
    for name in changes:
        if name not in known:
            raise ValueError(f"setting {section}.{name}: {type(config).__name__} has no setting "
                             f"{name!r}; it has {', '.join(known)}")
    return dataclasses.replace(config, **changes)
