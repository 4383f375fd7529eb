"""Worked solutions to the notebooks' exercises (``ocrlib.exercises``). Try them first.

Each solution is named after its exercise: ``ex_03_1`` answers "03.1". In a notebook:
``from solutions import ex_03_1`` (the notebooks run in this folder), then
``check("03.1", ex_03_1)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# 01.1: luminance, standardised, flipped so that the ink (the histogram's tail) is bright


def ex_01_1(rgb: np.ndarray) -> torch.Tensor:
    g = rgb[..., :3].astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    g = (g - g.mean()) / max(float(g.std()), 0.02)
    if float(np.mean(g**3)) < 0:  # skewed towards dark values: dark ink on light paper
        g = -g
    return torch.from_numpy(g)


# 01.2: ceil(250 / 4) = 63 frames; n copies of one character need n + (n - 1) frames, so 32
ex_01_2 = (63, 32)

# 02.1: the stem halves twice (/4), layer2 and layer3 halve (/16), layer4 is patched: 512/16
ex_02_1 = 32


# 02.2


def ex_02_2(model: torch.nn.Module) -> float:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad) / sum(p.numel() for p in params)


# 03.1: integrate exp(A s) B over one step of length dt


def ex_03_1(dt: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (torch.exp(dt * a) - 1) / a


# 03.2


def ex_03_2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h, out = torch.zeros_like(b[0]), []
    for t in range(len(a)):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out)


# 04.1: the forward algorithm with counts instead of probabilities


def ex_04_1(T: int, label: list[int]) -> int:
    ext = [0]
    for c in label:
        ext += [c, 0]
    alpha = [1, 1] + [0] * (len(ext) - 2)
    for _ in range(1, T):
        alpha = [alpha[s] + (alpha[s - 1] if s >= 1 else 0)
                 + (alpha[s - 2] if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2] else 0)
                 for s in range(len(ext))]
    return alpha[-1] + alpha[-2]


# 04.2: 10 % warm-up of 3,000 steps is 300 steps, 0 to 299: OneCycleLR's warm-up phase ends at
# step pct_start × total − 1, where the rate reaches its peak (section 8: 249 for the laptop's)
ex_04_2 = 299


# 05.1: total edits over total reference characters (not the mean of per-line CERs)


def ex_05_1(refs: list[str], hyps: list[str]) -> float:
    return sum(ex_06_2(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)


# 05.2: the best class per frame, then collapse repeats and drop blanks


def ex_05_2(log_probs: torch.Tensor, charset) -> str:  # noqa: ANN001
    path = log_probs.argmax(-1).tolist()
    ids = [c for k, c in enumerate(path) if c != 0 and (k == 0 or c != path[k - 1])]
    return charset.decode(ids)


# 06.1


def ex_06_1(refs: list[str], hyps: list[str]) -> float:
    return ex_05_1([r.lower() for r in refs], [h.lower() for h in hyps])


# 06.2: Levenshtein distance, one row at a time


def ex_06_2(ref: str, hyp: str) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


# 07.1: images under images/, then labels.txt (image<TAB>text), written last


def ex_07_1(out: Path, pairs: list) -> None:
    (Path(out) / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (image, text) in enumerate(pairs):
        name = f"images/{k:06d}.png"
        image.save(Path(out) / name)
        lines.append(f"{name}\t{text}\n")
    (Path(out) / "labels.txt").write_text("".join(lines))


# 07.2: scaled to 32 pixels high, the image is 80 wide: 80 / 4 = 20 frames
ex_07_2 = 20
