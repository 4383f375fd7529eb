"""Taking a model's errors apart (notebook 06): an error table, confusions, breakdowns, the
data of the CTC alignment view, the worst cases, and saving a selection for retraining. The
figures drawn from these are in :mod:`ocrlib.viz`.

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

from .charset import Charset
from . import folder as labelled
from .folder import read_meta
from .metrics import Edit, align, cer, error_counts, sample_cer

#: Error kinds, as :func:`error_kinds` names them.
ERROR_KINDS = ("substitution", "dropped repeat", "deletion", "doubled character", "insertion")
#: Generator metadata copied into the error table when ``meta.jsonl`` has it.
META_FIELDS = ("font", "family", "size", "angle", "blur", "noise", "bg", "fg", "crop", "background",
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


def worst(table: pd.DataFrame, n: int = 9) -> pd.DataFrame:
    """The ``n`` worst readings: highest CER first, then the least confident."""
    wrong = table[~table["correct"]]
    conf = wrong["confidence"].fillna(0.0) if "confidence" in wrong else 0.0
    return wrong.assign(_conf=conf).sort_values(["cer", "_conf"], ascending=[False, True]).drop(
        columns="_conf").head(n)


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
    and return its :func:`error_table`, with ``read_crop``: the margin of the crop to the
    ink rows each reading came from (:mod:`ocrlib.recrop`), NaN for the line as given,
    ``read_stretch``: the width factor it came from (``stretch``), NaN for the line at its own
    width, ``flipped``: whether it was read with the other polarity (``flip_unsure``), and
    ``colour_view``: whether it was read in the line's colour view (``colour_view``)."""
    r = recognizer.evaluate(folder, limit=limit)
    table = error_table(r["references"], r["predictions"], r["paths"], r["confidences"],
                        r["alternatives"], folder=folder)
    table["read_crop"] = pd.array([float("nan") if m is None else m for m in r["recrops"]],
                                  dtype="float64")
    table["read_stretch"] = pd.array([float("nan") if f is None else f
                                      for f in r["stretches"]], dtype="float64")
    table["flipped"] = r["flipped"]
    table["colour_view"] = r["colour"]
    return table
