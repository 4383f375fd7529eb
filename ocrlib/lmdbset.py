"""Labelled sets as LMDB databases, the format of the scene-text benchmarks (MJSynth, SynthText
and the evaluation sets of deep-text-recognition-benchmark): keys ``num-samples``, and for
``i`` from 1, ``image-%09d`` (the encoded image file) and ``label-%09d`` (UTF-8 text).

An LMDB set is a folder holding ``data.mdb``. :class:`ocrlib.data.OCRDataset` (and so ``train``,
``eval`` and the error analysis) reads it like a labelled folder: its samples' paths are
``<set>/image-000000001`` and are read through :func:`read_image_bytes`. :func:`folder_to_lmdb`
and :func:`lmdb_to_folder` convert both ways (``ocrlib convert``).
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from .folder import DataError, LabelLine, finish, image_name, prepare, read_labels

#: the map size reserved for a new database (address space, not disk: LMDB grows into it)
MAP_SIZE = 1 << 40


def is_lmdb(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an LMDB set (a folder with ``data.mdb``)."""
    return (Path(path) / "data.mdb").is_file()


@lru_cache(maxsize=16)
def _env(folder: str, pid: int) -> Any:
    """One read-only environment per set and process (DataLoader workers open their own)."""
    import lmdb

    return lmdb.open(folder, readonly=True, lock=False, readahead=False, meminit=False,
                     max_readers=256)


def _get(folder: Path, key: str) -> bytes | None:
    with _env(str(folder), os.getpid()).begin() as txn:
        return txn.get(key.encode())


def read_lmdb_labels(folder: str | os.PathLike[str]) -> list[LabelLine]:
    """The samples of an LMDB set as :class:`~ocrlib.folder.LabelLine` s (source ``set:key``).

    Raises:
        DataError: without a readable ``num-samples``, or for a label that is not UTF-8.
    """
    folder = Path(folder)
    out = []
    with _env(str(folder), os.getpid()).begin() as txn:  # one read transaction for the listing
        try:
            n = int(txn.get(b"num-samples") or b"")
        except ValueError:
            raise DataError(f"{folder}: no 'num-samples' key: not a text-recognition LMDB set") from None
        for i in range(1, n + 1):
            key = f"label-{i:09d}"
            try:
                text = (txn.get(key.encode()) or b"").decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{folder}:{key}: label is not UTF-8") from None
            out.append(LabelLine(folder / f"image-{i:09d}", text, f"{folder}:{key}"))
    return out


def read_image_bytes(path: Path) -> bytes | None:
    """The encoded image of an LMDB sample path (``<set>/image-%09d``), or None if it has none."""
    return _get(path.parent, path.name)


def folder_to_lmdb(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   overwrite: bool = False) -> int:
    """Write the labelled folder ``src`` as the LMDB set ``dst``; returns the number of samples.

    Raises:
        FileExistsError: ``dst`` exists and is not empty, without ``overwrite``.
        DataError: naming every image file of ``src`` that is missing.
    """
    import lmdb

    items = read_labels(src)
    missing = [f"{it.source}: image file not found: {it.path}" for it in items if not it.path.is_file()]
    if missing:
        raise DataError(f"{src}: {len(missing)} missing images:\n  " + "\n  ".join(missing[:20]))
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{dst} is not empty; pass --overwrite to replace it")
        for name in ("data.mdb", "lock.mdb"):
            (dst / name).unlink(missing_ok=True)
    dst.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(dst), map_size=MAP_SIZE, subdir=True)
    with env.begin(write=True) as txn:
        for i, item in enumerate(items, start=1):
            txn.put(f"image-{i:09d}".encode(), item.path.read_bytes())
            txn.put(f"label-{i:09d}".encode(), item.text.encode("utf-8"))
        txn.put(b"num-samples", str(len(items)).encode())  # last: a set is complete or absent
    env.close()
    _env.cache_clear()
    return len(items)


def lmdb_to_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   overwrite: bool = False) -> int:
    """Write the LMDB set ``src`` as a labelled folder ``dst`` (images keep their encoding);
    returns the number of samples."""
    from PIL import Image

    items = read_lmdb_labels(src)
    out = prepare(dst, overwrite)
    labels = []
    for i, item in enumerate(items):
        data = read_image_bytes(item.path)
        if data is None:
            raise DataError(f"{item.source}: no {item.path.name} key")
        with Image.open(io.BytesIO(data)) as im:
            suffix = "." + (im.format or "png").lower().replace("jpeg", "jpg")
        name = image_name(i, suffix)
        (out / name).write_bytes(data)
        labels.append((name, item.text))
    finish(out, labels)
    return len(items)

