"""Checkable exercises: ``check("03.1", answer)`` says whether a learner's answer is right.

Each notebook ends with a few exercises named ``"NN.k"`` (notebook NN, exercise k). The
statement is in the notebook; the checker here compares the answer (a function, run on fresh
inputs, or a value) with what ``ocrlib`` computes, and says why when it differs. A stub that
still returns None (its body is ``...``) counts as not attempted. Worked solutions are in
``notebooks/solutions.py``: open it once you have tried.
"""

from __future__ import annotations

import dataclasses
import random
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


class Wrong(Exception):
    """An answer that differs from the expected one (the message says how)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: a short title and the checker (raises :class:`Wrong` or returns None)."""

    title: str
    checker: Callable[[Any], None]


def _close(mine: Any, expected: torch.Tensor, what: str, atol: float = 1e-4) -> None:
    if mine is None:
        raise NotImplementedError
    mine = torch.as_tensor(mine, dtype=expected.dtype)
    if mine.shape != expected.shape:
        raise Wrong(f"{what}: shape {tuple(mine.shape)}, expected {tuple(expected.shape)}")
    worst = (mine - expected).abs().max().item()
    if worst > atol:
        raise Wrong(f"{what}: differs by up to {worst:.3g}")


def _equal(mine: Any, expected: Any, what: str) -> None:
    if mine is None:
        raise NotImplementedError
    if mine != expected:
        raise Wrong(f"{what}: got {mine!r}")


# ---------------------------------------------------------------------------- 01 data


def _grey(fn: Callable) -> None:
    from .data import normalize_pixels

    rng = np.random.default_rng(0)
    for dark_ink in (True, False):
        paper, ink = (0.9, 0.1) if dark_ink else (0.1, 0.9)
        rgb = np.full((32, 64, 3), paper, dtype=np.float32) * rng.uniform(0.8, 1.0, 3).astype(np.float32)
        rgb[10:22, 8:56] = ink  # a bar of ink: the tail of the histogram
        rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
        _close(fn(rgb), normalize_pixels(rgb)[0][0], f"{'dark' if dark_ink else 'light'} ink")


def _frames(answer: Any) -> None:
    from .charset import ctc_min_length
    from .data import ctc_time_steps

    T = ctc_time_steps(250)
    longest = max(n for n in range(1, T + 1) if ctc_min_length("a" * n) <= T)
    _equal(answer, (T, longest), "(frames, longest run of one character)")


# ---------------------------------------------------------------------------- 02 backbone


def _steps_layer4(answer: Any) -> None:
    import torchvision

    net = torchvision.models.resnet34(weights=None).eval()
    net.layer4[0].conv1.stride = (2, 1)
    net.layer4[0].downsample[0].stride = (2, 1)
    with torch.no_grad():
        T = torch.nn.Sequential(*list(net.children())[:-2])(torch.zeros(1, 3, 32, 512)).shape[-1]
    _equal(answer, T, "time steps")


def _trainable_share(fn: Callable) -> None:
    from .backbone import BackboneConfig, ResNetBackbone, apply_freeze
    from .sizes import count_params

    for adaptation, policy in (("none", "full"), ("adapter", "original"), ("none", "original")):
        model = ResNetBackbone(BackboneConfig(adaptation=adaptation, width=16))
        apply_freeze(model, policy)
        expected = count_params(model, trainable_only=True) / count_params(model)
        _close(fn(model), torch.tensor(expected, dtype=torch.float64), f"{adaptation}/{policy}", 1e-9)


# ---------------------------------------------------------------------------- 03 Mamba


def _zoh(fn: Callable) -> None:
    g = torch.Generator().manual_seed(0)
    dt = torch.rand(20, generator=g) * 0.5 + 0.01
    a = -torch.rand(20, generator=g) * 4 - 0.1
    _close(fn(dt, a), (torch.exp(dt * a) - 1) / a, "B̄ for B = 1", 1e-5)


def _linear_scan(fn: Callable) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(30, 4, generator=g), torch.randn(30, 4, generator=g)
    h, expected = torch.zeros(4), []
    for t in range(30):
        h = a[t] * h + b[t]
        expected.append(h)
    _close(fn(a, b), torch.stack(expected), "prefixes h_t", 1e-5)


# ---------------------------------------------------------------------------- 04 CTC


def _count_alignments(fn: Callable) -> None:
    import itertools

    from .decoding import collapse

    for T, label in ((3, [1]), (4, [1, 2]), (5, [1, 1]), (6, [1, 2, 1]), (7, [2, 2, 3])):
        classes = [0, *sorted(set(label))]
        brute = sum(collapse(list(p)) == label for p in itertools.product(classes, repeat=T))
        _equal(fn(T, label), brute, f"T={T}, label {label}")


def _peak_step(answer: Any) -> None:
    from .profiles import profiles
    from .train import lr_curve

    lrs = lr_curve(dataclasses.replace(profiles()["laptop"].train, steps=3000, warmup=0.1))
    _equal(answer, max(range(len(lrs)), key=lrs.__getitem__), "step of the peak")


# ---------------------------------------------------------------------------- 05 decoding


def _random_pairs(seed: int, n: int = 40) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    chars = string.ascii_letters[:6] + "01"
    refs = ["".join(rng.choices(chars, k=rng.randint(1, 9))) for _ in range(n)]
    hyps = ["".join(rng.choices(chars, k=rng.randint(0, 9))) if rng.random() < 0.6 else r
            for r in refs]
    return refs, hyps


def _cer(fn: Callable) -> None:
    from .metrics import cer

    refs, hyps = _random_pairs(0)
    _close(fn(refs, hyps), torch.tensor(cer(refs, hyps), dtype=torch.float64), "CER", 1e-9)


def _greedy(fn: Callable) -> None:
    from .charset import Charset
    from .decoding import greedy_decode

    charset = Charset("abc")
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        lp = (torch.randn(12, 4, generator=g) * 3).log_softmax(-1)
        _equal(fn(lp, charset), greedy_decode(lp[None], charset)[0].text, "reading")


# ---------------------------------------------------------------------------- 06 errors


def _cer_ci(fn: Callable) -> None:
    from .metrics import cer

    refs, hyps = _random_pairs(1)
    hyps = [h.swapcase() if i % 3 == 0 else h for i, h in enumerate(hyps)]
    _close(fn(refs, hyps), torch.tensor(cer(refs, hyps, ignore_case=True), dtype=torch.float64),
           "case-insensitive CER", 1e-9)


def _edit_distance(fn: Callable) -> None:
    from .metrics import edit_distance

    for r, h in zip(*_random_pairs(2, 30)):
        _equal(fn(r, h), edit_distance(r, h), f"distance({r!r}, {h!r})")


# ---------------------------------------------------------------------------- 07 own data


def _write_folder(fn: Callable) -> None:
    from PIL import Image

    from .data import OCRDataset
    from .profiles import profiles

    pairs = [(Image.new("RGB", (40 + 10 * k, 20), "white"), text)
             for k, text in enumerate(("Hello", "42", "OCR2026"))]
    with tempfile.TemporaryDirectory() as tmp:
        if fn(Path(tmp) / "mine", pairs) is None and not (Path(tmp) / "mine" / "labels.txt").exists():
            raise NotImplementedError
        ds = OCRDataset(Path(tmp) / "mine", profiles()["tiny"].model.charset)
        _equal([it.text for it in ds.items], [t for _, t in pairs], "labels read back")
        _equal([ds[k].image.shape[-1] >= 1 for k in range(3)], [True] * 3, "images read back")


def _frames_own(answer: Any) -> None:
    from .data import ctc_time_steps

    _equal(answer, ctc_time_steps(round(100 * 32 / 40)), "frames")


EXERCISES: dict[str, Exercise] = {
    "01.1": Exercise("grey, standardised, ink-bright input", _grey),
    "01.2": Exercise("frames of a 250-pixel line", _frames),
    "02.1": Exercise("time steps with only layer4 patched", _steps_layer4),
    "02.2": Exercise("share of trainable parameters", _trainable_share),
    "03.1": Exercise("the exact (zero-order hold) input coefficient", _zoh),
    "03.2": Exercise("a linear recurrence, step by step", _linear_scan),
    "04.1": Exercise("counting CTC alignments", _count_alignments),
    "04.2": Exercise("where a one-cycle rate peaks", _peak_step),
    "05.1": Exercise("corpus-level CER", _cer),
    "05.2": Exercise("greedy decoding of one line", _greedy),
    "06.1": Exercise("case-insensitive CER", _cer_ci),
    "06.2": Exercise("edit distance by dynamic programming", _edit_distance),
    "07.1": Exercise("a labelled folder of your own", _write_folder),
    "07.2": Exercise("frames of a 40×100 image", _frames_own),
}


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` found: true when the answer is right; shown as one line."""

    name: str
    title: str
    right: bool
    message: str

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return f"{self.name} ({self.title}): {self.message}"


def check(name: str, answer: Any) -> Verdict:
    """Check ``answer`` to exercise ``name``; the verdict is true when it is right.

    A stub (a function that returns None, or None itself) is reported as not attempted; an
    answer that raises is reported with its error instead of stopping the notebook.

    Raises:
        KeyError: for an unknown exercise name, listing the known ones.
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; there are {', '.join(EXERCISES)}")
    ex = EXERCISES[name]
    try:
        ex.checker(answer)
    except NotImplementedError:
        return Verdict(name, ex.title, False, "not attempted yet")
    except Wrong as err:
        return Verdict(name, ex.title, False, f"not yet right: {err}")
    except Exception as err:  # the learner's code failed: say how, do not stop the notebook
        return Verdict(name, ex.title, False, f"your answer raised {type(err).__name__}: {err}")
    return Verdict(name, ex.title, True, "right")
