"""Taking a model's errors apart (notebook 06): an error table, confusions, breakdowns,
CTC alignment views and a static grid of failures.

Everything here works on a :class:`pandas.DataFrame` with one row per sample (see
:func:`error_table`), so a learner can also slice it by hand.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .charset import BLANK, Charset
from . import folder as labelled
from .folder import read_meta
from .io import atomic_write
from .metrics import Edit, align, cer, error_counts, sample_cer

#: Error kinds, as :func:`error_kinds` names them.
ERROR_KINDS = ("substitution", "dropped repeat", "deletion", "doubled character", "insertion")
#: Generator metadata copied into the error table when ``meta.jsonl`` has it.
META_FIELDS = ("font", "family", "size", "angle", "blur", "noise", "bg", "fg", "background",
               "stretch", "shear", "lines", "lowres", "jpeg")


def error_kinds(reference: str, prediction: str, edits: list[Edit] | None = None) -> list[str]:
    """The kinds of error in one reading, each named once, in :data:`ERROR_KINDS` order.

    A deleted character next to an equal one in the reference is a *dropped repeat* (CTC's
    typical failure: no blank frame between twins, ``"1123"`` read as ``"123"``); an inserted
    character next to an equal one in the prediction is a *doubled character*. ``edits`` is
    the pair's :func:`ocrlib.metrics.align`, when already at hand.
    """
    kinds = set()
    for e in align(reference, prediction) if edits is None else edits:
        if e.kind == "substitute":
            kinds.add("substitution")
        elif e.kind == "delete":
            twins = {reference[i] for i in (e.ref_pos - 1, e.ref_pos + 1) if 0 <= i < len(reference)}
            kinds.add("dropped repeat" if e.ref in twins else "deletion")
        elif e.kind == "insert":
            twins = {prediction[j] for j in (e.hyp_pos - 1, e.hyp_pos + 1) if 0 <= j < len(prediction)}
            kinds.add("doubled character" if e.hyp in twins else "insertion")
    return [k for k in ERROR_KINDS if k in kinds]


def error_table(references: Sequence[str], predictions: Sequence[str], paths: Sequence[str],
                confidences: Sequence[float] | None = None,
                alternatives: Sequence[Sequence[tuple[str, float]]] | None = None,
                folder: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per sample: ``path, reference, prediction, correct, cer, confidence, length,
    kinds, alternatives`` and, when ``folder/meta.jsonl`` exists, the generator's
    :data:`META_FIELDS` (``angle`` as its absolute value in ``abs_angle`` too).

    ``paths`` are the images' paths; their metadata is looked up by the path relative to
    ``folder`` (as ``meta.jsonl`` stores it).
    """
    n = len(references)
    if not (len(predictions) == len(paths) == n):
        raise ValueError(f"{n} references, {len(predictions)} predictions, {len(paths)} paths")
    meta = read_meta(folder) if folder is not None else {}
    rows = []
    for k in range(n):
        ref, hyp = references[k], predictions[k]
        edits = align(ref, hyp)
        row: dict[str, Any] = {
            "path": str(paths[k]), "reference": ref, "prediction": hyp, "correct": ref == hyp,
            "cer": sample_cer(ref, hyp, edits),
            "confidence": None if confidences is None else confidences[k],
            "length": len(ref), "kinds": tuple(error_kinds(ref, hyp, edits)),
            "alternatives": list(alternatives[k]) if alternatives is not None else [],
        }
        if meta:
            try:
                rel = Path(paths[k]).resolve().relative_to(Path(folder).resolve()).as_posix()
            except ValueError:
                rel = str(paths[k])
            m = meta.get(rel, {})
            for f in META_FIELDS:
                row[f] = tuple(m[f]) if isinstance(m.get(f), list) else m.get(f)
            row["abs_angle"] = abs(m["angle"]) if m.get("angle") is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def confusions(table: pd.DataFrame) -> pd.DataFrame:
    """Every character edit over the table, counted: columns ``kind, reference, prediction,
    count``, most frequent first. ``kind`` is substitute, delete or insert; the side a
    deletion or insertion lacks is ``""``."""
    counts = error_counts(list(table["reference"]), list(table["prediction"]))
    rows = [(k, r, h, c) for (k, r, h), c in counts.items()]
    out = pd.DataFrame(rows, columns=["kind", "reference", "prediction", "count"])
    return out.sort_values(["count", "kind", "reference", "prediction"],
                           ascending=[False, True, True, True], ignore_index=True)


def confusion_matrix(table: pd.DataFrame, chars: str) -> pd.DataFrame:
    """Counts of (reference character -> predicted character) over the aligned errors,
    with ``∅`` for the missing side: row ``∅`` holds insertions, column ``∅`` deletions.
    Correct characters are left out (the diagonal stays 0) so the errors stand out."""
    labels = list(chars) + ["∅"]
    m = pd.DataFrame(0, index=pd.Index(labels, name="reference"),
                     columns=pd.Index(labels, name="prediction"))
    for _, row in confusions(table).iterrows():
        r, h = row["reference"] or "∅", row["prediction"] or "∅"
        if r in m.index and h in m.columns:
            m.loc[r, h] += int(row["count"])
    return m


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


def breakdown(table: pd.DataFrame, by: str, bins: Sequence[float] | int | None = None) -> pd.DataFrame:
    """Error rates per group of ``by`` (a column: ``length``, ``font``, ``abs_angle``, ``blur``,
    ``noise``...): columns ``group, n, cer, accuracy``, where ``cer`` is corpus-level within the
    group. Numeric columns are cut into ``bins`` (edges, or a number of equal-width bins;
    default 4) unless they hold few distinct values."""
    if by not in table.columns:
        raise KeyError(f"no column {by!r} in the error table (has: {', '.join(table.columns)})")
    data = table[table[by].notna()]
    key = data[by]
    if pd.api.types.is_numeric_dtype(key) and (bins is not None or key.nunique() > 8):
        key = pd.cut(key.astype(float), bins=4 if bins is None else bins, include_lowest=True)
    rows = []
    for group, part in data.groupby(key, observed=True, sort=True):
        rows.append({"group": group, "n": len(part),
                     "cer": cer(list(part["reference"]), list(part["prediction"])),
                     "accuracy": float(part["correct"].mean())})
    return pd.DataFrame(rows, columns=["group", "n", "cer", "accuracy"])


def plot_breakdowns(table: pd.DataFrame, columns: Sequence[str] = ("length", "family", "abs_angle",
                                                                  "blur", "noise")) -> Any:
    """One bar chart of CER per group for each column present in the table; returns the figure."""
    import matplotlib.pyplot as plt

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
    if isinstance(group, pd.Interval):  # cut's lower edge dips below the minimum: show it as 0
        return f"{max(group.left, 0.0):.3g}–{group.right:.3g}"
    return str(group)


def frame_columns(width: int, frames: int) -> np.ndarray:
    """The image columns each CTC frame stands for: ``(T, 2)`` ``[start, end)`` pixel
    positions. The backbone's stride spreads ``T`` frames evenly over ``width`` pixels
    (each frame also *sees* a wider window: its receptive field)."""
    edges = np.linspace(0, width, frames + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def alignment_data(log_probs: torch.Tensor, charset: Charset, width: int) -> dict[str, Any]:
    """What the alignment view draws, for one line.

    Shape:
        log_probs: ``(T, V)``. Returns ``probs`` ``(V, T)`` (class by frame), ``columns``
        ``(T, 2)`` from :func:`frame_columns`, ``best_path`` (T class labels, ``-`` for
        blank) and ``labels`` (V class names, blank first).
    """
    if log_probs.dim() != 2:
        raise ValueError(f"expected (T, V) log-probabilities, got shape {tuple(log_probs.shape)}")
    probs = log_probs.detach().float().exp().cpu()
    labels = ["-"] + list(charset.chars)
    best = [labels[c] for c in probs.argmax(-1).tolist()]
    return {"probs": probs.T.numpy(), "columns": frame_columns(width, probs.shape[0]),
            "best_path": best, "labels": labels}


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


def worst(table: pd.DataFrame, n: int = 9) -> pd.DataFrame:
    """The ``n`` worst readings: highest CER first, then the least confident."""
    wrong = table[~table["correct"]]
    conf = wrong["confidence"].fillna(0.0) if "confidence" in wrong else 0.0
    return wrong.assign(_conf=conf).sort_values(["cer", "_conf"], ascending=[False, True]).drop(
        columns="_conf").head(n)


def failure_grid(table: pd.DataFrame, path: str | os.PathLike[str], n: int = 9, cols: int = 3) -> Path:
    """Write a PNG grid (3×3 by default) of the worst readings, for use without widgets.

    Each tile shows the image, the truth and the reading. Returns the PNG's path."""
    import matplotlib.pyplot as plt

    from .viz import use_file_backend

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


def save_selection(table: pd.DataFrame, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Copy the table's samples into a labelled folder (:mod:`ocrlib.folder`: ``images/``,
    ``meta.jsonl``, ``labels.txt`` with the *references* as labels), ready for
    :class:`ocrlib.data.OCRDataset` and for retraining.

    Refuses a non-empty ``out`` unless ``overwrite``; ``labels.txt`` is removed first and
    written last, atomically, so an interrupted save never leaves a folder that looks complete.
    """
    out = labelled.prepare(out, overwrite)
    labels, metas = [], []
    for k, (_, row) in enumerate(table.iterrows()):
        src = Path(row["path"])
        if not src.is_file():
            raise FileNotFoundError(f"{src}: image of the selection is missing")
        rel = labelled.image_name(k, src.suffix.lower())
        shutil.copyfile(src, out / rel)
        labels.append((rel, row["reference"]))
        meta = {"image": rel, "label": row["reference"], "source": str(src),
                "prediction": row["prediction"]}
        for f in META_FIELDS:
            if f in row and row[f] is not None and not (isinstance(row[f], float) and math.isnan(row[f])):
                meta[f] = list(row[f]) if isinstance(row[f], tuple) else row[f]
        metas.append(meta)
    labelled.finish(out, labels, metas)
    return out


def analyse(recognizer: Any, folder: str | os.PathLike[str], limit: int | None = None) -> pd.DataFrame:
    """Read a labelled folder with ``recognizer`` (an :class:`ocrlib.inference.Recognizer`;
    with ``decoder="beam"`` and ``top_n > 1`` the table gets beam's alternative readings)
    and return its :func:`error_table`."""
    r = recognizer.evaluate(folder, limit=limit)
    return error_table(r["references"], r["predictions"], r["paths"], r["confidences"],
                       r["alternatives"], folder=folder)


def view_alignment(recognizer: Any, row: pd.Series, classes: str = "used") -> Any:
    """:func:`plot_alignment` for one row of an error table, read again by ``recognizer``."""
    from .data import load_image

    batch = recognizer.prepare([load_image(row["path"])])
    log_probs = recognizer.log_probs(batch.images)[0]
    return plot_alignment(batch.images[0], log_probs, recognizer.model.charset, row["reference"],
                          row["prediction"], classes=classes)
