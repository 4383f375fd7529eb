"""Labelled folders, image loading, the torch Dataset and the CTC collate (notebook 01).

A labelled folder holds ``labels.txt`` with one sample per line, either
``path<TAB>label`` (what :mod:`ocrlib.synth` writes; labels may contain spaces) or the
original project's ``path label`` (split at the first space). Paths are relative to the
folder. Bad input raises :class:`DataError` naming the file and line, or, with
``skip_bad=True``, is skipped and counted in the log.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .charset import Charset, ctc_min_length

log = logging.getLogger(__name__)

IMAGE_HEIGHT = 32
IMAGE_WIDTH = 320
#: The backbone divides the width by 4 (see :mod:`ocrlib.backbone`): T = ceil(W / 4).
WIDTH_PER_STEP = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A sample that cannot be used: the message names the file (and line)."""


def ctc_time_steps(width: int) -> int:
    """Number of CTC frames T the model produces for an image ``width`` pixels wide.

    Two stride-2 stages (conv1 with padding 3, maxpool with padding 1) each map a width
    ``w`` to ``ceil(w / 2)``, so ``T = ceil(W / 4)``; later stages keep the width.
    """
    return -(-width // WIDTH_PER_STEP)


@dataclass(frozen=True)
class LabelLine:
    """One line of a labels file: image path (absolute), label text, and where it came from."""

    path: Path
    text: str
    source: str  # "labels.txt:12"


def read_labels(folder: str | os.PathLike[str], filename: str = "labels.txt") -> list[LabelLine]:
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
    """The generator's per-sample metadata keyed by relative image path ({} if absent)."""
    path = Path(folder) / "meta.jsonl"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {row["image"]: row for row in rows}


def check_label(text: str, charset: Charset, max_steps: int | None) -> str | None:
    """Why ``text`` cannot be a CTC training target, or None if it can."""
    if not text:
        return "empty label"
    bad = charset.unknown(text)
    if bad:
        return f"character {bad[0]!r} in label {text!r} is not in the charset"
    if max_steps is not None and ctc_min_length(text) > max_steps:
        return (
            f"label {text!r} needs {ctc_min_length(text)} CTC frames (length + adjacent repeats) "
            f"but the model produces only {max_steps}"
        )
    return None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open any PIL image as 8-bit RGB: transparency over white, 16-bit and float scaled.

    Raises:
        DataError: naming the file, when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert("RGB")


def image_to_tensor(
    img: Image.Image, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH
) -> torch.Tensor:
    """Resize to ``height`` keeping the aspect ratio, shrink to ``width`` if wider, right-pad, normalise.

    Returns:
        A float tensor of shape ``(3, height, width)`` normalised with ImageNet statistics;
        the padding is 0 (the mean colour) after normalisation.
    """
    w = max(1, min(width, round(img.width * height / img.height)))
    img = img.resize((w, height), Image.Resampling.BILINEAR)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = torch.zeros(3, height, width)
    out[:, :, :w] = (arr - mean) / std
    return out


@dataclass
class Sample:
    """One item of :class:`OCRDataset`: image ``(3, H, W)``, its class indices and text."""

    image: torch.Tensor
    target: list[int]
    text: str
    path: str


@dataclass
class Batch:
    """A CTC batch.

    Attributes:
        images: ``(B, 3, H, W)`` float.
        targets: ``(sum of target lengths,)`` long, the concatenated class indices (no blanks).
        target_lengths: ``(B,)`` long.
        texts: the B label strings.
        paths: the B image paths.
    """

    images: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.images.to(device), self.targets.to(device),
                     self.target_lengths.to(device), self.texts, self.paths)


class OCRDataset(Dataset):
    """Images and labels from a labelled folder.

    Args:
        folder: holds ``labels.txt`` (and ``images/``).
        charset: the model's charset.
        height, width: the network's input size.
        max_steps: the model's number of CTC frames T (default ``ctc_time_steps(width)``);
            labels that need more are rejected. ``None`` in ``check_length=False`` mode.
        skip_bad: skip (and count) bad labels and unreadable images instead of raising.
        check_length: reject labels too long for CTC (turn off for evaluation).
        targets: encode labels as CTC targets (training). With ``False`` (evaluation) a
            label may hold characters outside the charset: it is kept as text, with an
            empty target, and :attr:`unknown_labels` counts such labels.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        charset: Charset,
        height: int = IMAGE_HEIGHT,
        width: int = IMAGE_WIDTH,
        max_steps: int | None = None,
        skip_bad: bool = False,
        check_length: bool = True,
        targets: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.charset = charset
        self.height, self.width = height, width
        self.skip_bad = skip_bad
        steps = (max_steps or ctc_time_steps(width)) if check_length and targets else None
        self.targets = targets
        self.items: list[LabelLine] = []
        self.unknown_labels = 0
        skipped = 0
        for item in read_labels(self.folder):
            if not targets and item.text and charset.unknown(item.text):
                self.unknown_labels += 1
                self.items.append(item)
                continue
            why = check_label(item.text, charset, steps)
            if why is None:
                self.items.append(item)
            elif skip_bad:
                skipped += 1
                log.debug("skipping %s: %s", item.source, why)
            else:
                raise DataError(f"{item.source}: {why}")
        if skipped:
            log.warning("%s: skipped %d bad labels", self.folder, skipped)
        self.bad_images = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample | None:
        item = self.items[i]
        try:
            img = load_image(item.path)
        except DataError as err:
            if not self.skip_bad:
                raise DataError(f"{err} (listed at {item.source})") from None
            self.bad_images += 1
            log.warning("skipping unreadable image: %s", err)
            return None
        tensor = image_to_tensor(img, self.height, self.width)
        target = self.charset.encode(item.text) if self.targets else []
        return Sample(tensor, target, item.text, str(item.path))


def ctc_collate(samples: Sequence[Sample | None]) -> Batch:
    """Stack samples into a :class:`Batch`; ``None`` (skipped) samples are dropped."""
    kept = [s for s in samples if s is not None]
    if not kept:
        raise DataError("every sample of this batch was unreadable")
    targets = torch.tensor([t for s in kept for t in s.target], dtype=torch.long)
    lengths = torch.tensor([len(s.target) for s in kept], dtype=torch.long)
    return Batch(
        images=torch.stack([s.image for s in kept]),
        targets=targets,
        target_lengths=lengths,
        texts=[s.text for s in kept],
        paths=[s.path for s in kept],
    )
