"""Every figure of the project, for the notebooks and the CLI: sample grids and label
statistics, training curves, the confusion heat map, CER breakdowns, the CTC alignment view
under a line, and the static failure grid. The numbers behind the error figures come from
:mod:`ocrlib.analysis`; matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .charset import BLANK, Charset
from .data import LabelLine, load_image
from .io import atomic_write

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LabelStats:
    """Counts over a list of labels."""

    n: int
    lengths: Counter[int]
    chars: Counter[str]

    @property
    def mean_length(self) -> float:
        return sum(k * v for k, v in self.lengths.items()) / max(1, self.n)


def label_stats(texts: Sequence[str]) -> LabelStats:
    """Length histogram and character frequencies of ``texts``."""
    return LabelStats(len(texts), Counter(len(t) for t in texts), Counter("".join(texts)))


def use_file_backend() -> None:
    """Before drawing a figure for a file: switch to Agg unless a notebook's inline backend is on.

    Scripts and the CLI may run without a display; a notebook keeps its inline figures.
    """
    import matplotlib

    if "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")


def sample_grid(
    items: Sequence[LabelLine], cols: int = 3, titles: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
):
    """A grid of images titled with their labels; saved as PNG when ``path`` is given.

    Returns the matplotlib Figure.
    """
    if path is not None:
        use_file_backend()
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 0.9 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, item) in enumerate(zip(axes.flat, items)):
        ax.imshow(load_image(item.path))
        ax.set_title(titles[k] if titles else repr(item.text), fontsize=9, family="monospace")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_history(history: list[dict[str, Any]], path: str | os.PathLike[str] | None = None):
    """Training loss and validation CER against the step (a run's ``history``); written as a
    PNG when ``path`` is given, else returned for display."""
    if path is not None:
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


def plot_pipeline(stages: dict[str, torch.Tensor], text: str, ax: Any = None) -> Any:
    """The model as a row of boxes, image -> features -> sequence -> logits -> text, each with
    the shape it really had (``stages`` from :meth:`ocrlib.model.MambaOCR.stages`)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 1.9))
    dims = {k: "×".join(str(n) for n in v.shape) for k, v in stages.items()}
    boxes = [("image", f"(B, 3, H, W)\n{dims['images']}"),
             ("ResNet34 backbone\ncolumns of 4 px", f"(B, T, 512)\n{dims['features']}"),
             ("Mamba encoder\nalong the line", f"(B, T, C)\n{dims['hidden']}"),
             ("linear classifier\n+ softmax", f"(B, T, V)\n{dims['logits']}"),
             ("CTC decoding\ncollapse, drop blanks", f"text\n{text!r}")]
    for k, (title, shape) in enumerate(boxes):
        x = k * 2.2
        ax.add_patch(plt.Rectangle((x, 0), 1.7, 1.0, facecolor="#e8eef7", edgecolor="#335"))
        ax.text(x + 0.85, 0.68, title, ha="center", va="center", fontsize=8, weight="bold")
        ax.text(x + 0.85, 0.25, shape, ha="center", va="center", fontsize=7.5, family="monospace")
        if k:
            ax.annotate("", xy=(x, 0.5), xytext=(x - 0.5, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set(xlim=(-0.1, len(boxes) * 2.2 - 0.4), ylim=(-0.1, 1.1))
    ax.axis("off")
    return ax


def plot_confusion_matrix(matrix: pd.DataFrame, ax: Any = None) -> Any:
    """Heat map of :func:`confusion_matrix` (rows: truth, columns: reading); returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        n = len(matrix)
        _, ax = plt.subplots(figsize=(min(14, 2 + 0.35 * n), min(12, 1.5 + 0.3 * n)))
    im = ax.imshow(matrix.to_numpy(), cmap="Reds", interpolation="nearest")
    ax.set_xticks(range(len(matrix.columns)), list(matrix.columns))
    ax.set_yticks(range(len(matrix.index)), list(matrix.index))
    ax.set_xlabel("read as (∅: deleted)")
    ax.set_ylabel("truth (∅: inserted)")
    top = max(1, int(matrix.to_numpy().max()))
    for (i, j), v in np.ndenumerate(matrix.to_numpy()):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > top / 2 else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("character confusions")
    return ax.figure


def plot_breakdowns(table: pd.DataFrame, columns: Sequence[str] = ("length", "family", "abs_angle",
                                                                  "blur", "noise")) -> Any:
    """One bar chart of CER per group for each column present in the table; returns the figure."""
    import matplotlib.pyplot as plt

    from .analysis import breakdown

    present = [c for c in columns if c in table.columns and table[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(3.6 * max(1, len(present)), 3.4),
                             squeeze=False)
    for ax, col in zip(axes[0], present):
        b = breakdown(table, col)
        names = [_group_name(g) for g in b["group"]]
        if col == "font":  # long names: the most error-prone fonts, shortened
            b = b.sort_values("cer", ascending=False).head(12)
            names = [str(g)[:18] for g in b["group"]]
        ax.bar(range(len(b)), b["cer"], color="tab:red")
        ax.set_xticks(range(len(b)), names, rotation=60 if col == "font" else 30, ha="right",
                      fontsize=7)
        for x, (c, n) in enumerate(zip(b["cer"], b["n"])):
            ax.text(x, c, f"n={n}", ha="center", va="bottom", fontsize=6)
        ax.set_title(f"CER by {col}")
    fig.tight_layout()
    return fig


def _group_name(group: Any) -> str:
    import pandas as pd

    if isinstance(group, pd.Interval):  # cut's lower edge dips below the minimum: show it as 0
        return f"{max(group.left, 0.0):.3g}–{group.right:.3g}"
    return str(group)


def plot_alignment(image: torch.Tensor | Image.Image, log_probs: torch.Tensor, charset: Charset,
                   reference: str | None = None, prediction: str | None = None,
                   classes: str = "used") -> Any:
    """The image with, under it on the same x axis, every frame's class probabilities.

    Args:
        image: ``(3, H, W)`` normalised tensor (as the model saw it) or a PIL image.
        log_probs: ``(T, V)`` for this image.
        classes: ``"used"`` shows the blank plus the classes that reach 5% somewhere or are
            in the reference (readable for 62 characters); ``"all"`` every class.
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .analysis import alignment_data

    if isinstance(image, torch.Tensor):  # network input: stretched to 0..1 for display
        pixels = image.detach().cpu().float().permute(1, 2, 0)
        pixels = ((pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-6)).numpy()
    else:
        pixels = np.asarray(image.convert("RGB"))
    H, W = pixels.shape[:2]
    d = alignment_data(log_probs, charset, W)
    rows = list(range(len(d["labels"])))
    if classes == "used":
        wanted = set(reference or "")
        rows = [r for r in rows if r == BLANK or d["probs"][r].max() >= 0.05 or d["labels"][r] in wanted]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 1.2 + 0.22 * len(rows) + 1.2), sharex=True,
                                      gridspec_kw={"height_ratios": [1.2, max(1.0, 0.22 * len(rows))]})
    top.imshow(pixels, extent=(0, W, H, 0), aspect="auto")
    top.set_yticks([])
    title = []
    if reference is not None:
        title.append(f"truth {reference!r}")
    if prediction is not None:
        title.append(f"read {prediction!r}")
    top.set_title("   ".join(title))
    bottom.imshow(d["probs"][rows], extent=(0, W, len(rows) - 0.5, -0.5), aspect="auto",
                  cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    bottom.set_yticks(range(len(rows)), [d["labels"][r] for r in rows], fontsize=7)
    for x0, _ in d["columns"][1:]:
        for ax in (top, bottom):
            ax.axvline(x0, color="tab:blue", lw=0.3, alpha=0.4)
    for (x0, x1), lab in zip(d["columns"], d["best_path"]):
        if lab != "-":
            top.text((x0 + x1) / 2, H + 1, lab, ha="center", va="top", color="tab:red", fontsize=8,
                     clip_on=False)
    bottom.set_xlabel("image column (blue lines: frame boundaries; red: best path's characters)")
    fig.tight_layout()
    return fig


def view_alignment(recognizer: Any, row: pd.Series, classes: str = "used") -> Any:
    """:func:`plot_alignment` for one row of an error table, read again by ``recognizer``."""
    from .data import load_image

    batch = recognizer.prepare([load_image(row["path"])])
    log_probs = recognizer.log_probs(batch.images)[0]
    return plot_alignment(batch.images[0], log_probs, recognizer.model.charset, row["reference"],
                          row["prediction"], classes=classes)


def failure_grid(table: pd.DataFrame, path: str | os.PathLike[str], n: int = 9, cols: int = 3) -> Path:
    """Write a PNG grid (3×3 by default) of the worst readings, for use without widgets.

    Each tile shows the image, the truth and the reading. Returns the PNG's path."""
    import matplotlib.pyplot as plt

    from .analysis import worst

    use_file_backend()
    rows = worst(table, n)
    k = max(1, len(rows))
    fig, axes = plt.subplots(math.ceil(k / cols), cols, figsize=(3.4 * cols, 1.3 * math.ceil(k / cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, rows.iterrows()):
        with Image.open(row["path"]) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_title(f"truth {row['reference']}\nread  {row['prediction']}", fontsize=8,
                     loc="left", family="monospace")
    if rows.empty:
        axes.flat[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)
    return path
