"""Pictures for the notebooks and the CLI: sample grids, label statistics, training curves."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import LabelLine, load_image


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

