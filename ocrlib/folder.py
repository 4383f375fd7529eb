"""Labelled folders: the one place that knows their files and the order they are written in.

A labelled folder holds::

    images/000000.png ...   the images
    meta.jsonl              one JSON object per sample: how it was made (optional)
    synth.json              how the whole set was made (optional; the generator writes it)
    labels.txt              "images/000000.png<TAB>label" per line, written LAST and atomically

``labels.txt`` is what makes a folder a data set, so it is written last (and removed first when
a folder is replaced): an interrupted write never leaves labels pointing at missing images.
The original project's ``path label`` lines (split at the first space) are read too. The
generator (:mod:`ocrlib.synth`), the error browser's :func:`ocrlib.analysis.save_selection` and
the dataset (:class:`ocrlib.data.OCRDataset`) all go through this module.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import atomic_write_text

LABELS_FILE = "labels.txt"
META_FILE = "meta.jsonl"
MANIFEST_FILE = "synth.json"
IMAGES_DIR = "images"


class DataError(ValueError):
    """A sample that cannot be used: the message names the file (and line)."""


@dataclass(frozen=True)
class LabelLine:
    """One line of a labels file: image path (absolute), label text, and where it came from."""

    path: Path
    text: str
    source: str  # "labels.txt:12"


def image_name(i: int, suffix: str = ".png") -> str:
    """The relative path of image ``i`` in a folder: ``images/000012.png``."""
    return f"{IMAGES_DIR}/{i:06d}{suffix}"


def read_labels(folder: str | os.PathLike[str], filename: str = LABELS_FILE) -> list[LabelLine]:
    """Parse ``folder/filename``. Empty lines are ignored.

    Raises:
        FileNotFoundError: the folder has no labels file.
        DataError: a line with no separator.
    """
    folder = Path(folder)
    path = folder / filename
    if not path.is_file():
        raise FileNotFoundError(f"no labels file at {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            sep = "\t" if "\t" in line else " "
            name, found, text = line.partition(sep)
            if not found:
                raise DataError(f"{path}:{no}: expected 'image<TAB>label', got {line!r}")
            out.append(LabelLine(folder / name.strip(), text, f"{path}:{no}"))
    return out


def read_meta(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per-sample metadata keyed by relative image path ({} if the folder has none).

    Raises:
        DataError: naming the file and line of a line that is not JSON.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    rows = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{no}: not JSON ({err})") from None
            rows[row["image"]] = row
    return rows


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder/synth.json`` (how the set was made: n, seed, split, stream, config, fonts),
    or None for a folder the generator did not make."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def prepare(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Make ``out`` ready to receive a set: missing or empty, or (with ``overwrite``) emptied of
    a previous set, ``labels.txt`` first. Returns ``out`` with its ``images/`` folder.

    Raises:
        NotADirectoryError: ``out`` is a file.
        FileExistsError: ``out`` is not empty and ``overwrite`` is false (nothing is touched).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; choose another folder or pass --overwrite to replace it")
        for name in (LABELS_FILE, META_FILE, MANIFEST_FILE):  # labels first: see the module doc
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    return out


def finish(out: str | os.PathLike[str], labels: Iterable[tuple[str, str]],
           metas: Iterable[dict[str, Any]] | None = None, manifest: dict[str, Any] | None = None
           ) -> None:
    """Write a set's metadata, then its manifest, then (last, atomically) ``labels.txt``.

    Args:
        labels: ``(relative image path, label)`` pairs.

    Raises:
        ValueError: naming the image, for a label holding a tab or a line break.
    """
    out = Path(out)
    rows = []
    for rel, text in labels:
        if any(ch in text for ch in "\t\r\n"):
            raise ValueError(f"{out / rel}: label {text!r} holds a tab or line break")
        rows.append(f"{rel}\t{text}\n")
    if metas is not None:
        atomic_write_text(out / META_FILE, "".join(json.dumps(m) + "\n" for m in metas))
    if manifest is not None:
        atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(out / LABELS_FILE, "".join(rows))
