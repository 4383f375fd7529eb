"""From image files to CTC batches: loading, the Dataset and the collate (notebook 01).

How pixels become network input is :mod:`ocrlib.normalize`'s business (re-exported here), the
files of a labelled folder :mod:`ocrlib.folder`'s. Bad input raises
:class:`~ocrlib.folder.DataError` naming every bad sample of the set by file and line at
once, or, with ``skip_bad=True``, is left out and named in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .charset import Charset, ctc_min_length
from .folder import DataError, LabelLine, read_labels, read_meta  # noqa: F401  (re-exported)
from .images import as_rgb, image_exists, image_size, load_image  # noqa: F401  (re-exported)
from .lmdbset import is_lmdb, read_lmdb_labels
from .normalize import (  # noqa: F401  (re-exported)
    IMAGENET_MEAN, IMAGENET_STD, SURE_SKEW, Normalize, ink_is_dark, normalize_pixels,
    unsure_polarity,
)

log = logging.getLogger(__name__)

IMAGE_HEIGHT = 32
IMAGE_WIDTH = 320
#: The backbone divides the width by 4 (see :mod:`ocrlib.backbone`): T = ceil(W / 4).
WIDTH_PER_STEP = 4


def ctc_time_steps(width: int) -> int:
    """Number of CTC frames T the model produces for an image ``width`` pixels wide.

    Two stride-2 stages (conv1 with padding 3, maxpool with padding 1) each map a width
    ``w`` to ``ceil(w / 2)``, so ``T = ceil(W / 4)``; later stages keep the width.
    """
    return -(-width // WIDTH_PER_STEP)


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


def bad_sample_report(folder: Path, problems: Sequence[str], listed: int = 20) -> str:
    """One message naming every bad sample of a set (the first ``listed``, then a count)."""
    lines = [f"{folder}: {len(problems)} bad sample{'s' if len(problems) != 1 else ''}:"]
    lines += [f"  {p}" for p in problems[:listed]]
    if len(problems) > listed:
        lines.append(f"  ... and {len(problems) - listed} more")
    return "\n".join(lines)


def resize_to_height(img: Image.Image, height: int, max_width: int) -> Image.Image:
    """Scale to ``height`` keeping the aspect ratio; squeeze to ``max_width`` if wider."""
    w = max(1, min(max_width, round(img.width * height / img.height)))
    return img.resize((w, height), Image.Resampling.BILINEAR)


def image_to_tensor(
    img: Image.Image, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH,
    normalize: Normalize = "grey", pad: bool = True,
) -> torch.Tensor:
    """Resize to ``height`` keeping the aspect ratio, shrink to ``width`` if wider, normalise
    (:func:`normalize_pixels`), and right-pad to ``width`` with the background level.

    Returns:
        A float tensor ``(3, height, width)``; with ``pad=False``, ``(3, height, w)`` where
        ``w <= width`` is the image's own width at that height.
    """
    t, fill = to_input(img, height, width, normalize)
    return pad_to(t, width, fill) if pad else t


def to_input(img: Image.Image, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH,
             normalize: Normalize = "grey") -> tuple[torch.Tensor, float]:
    """An RGB image -> ``(3, height, w)`` network input at its own width ``w <= width``, and
    the value to pad it with (:func:`normalize_pixels`)."""
    small = resize_to_height(img, height, width)
    return normalize_pixels(np.asarray(small, dtype=np.float32) / 255.0, normalize)


def pad_to(t: torch.Tensor, width: int, fill: float) -> torch.Tensor:
    """Right-pad a ``(C, H, w)`` tensor to ``(C, H, width)`` with ``fill``."""
    if t.shape[-1] >= width:
        return t
    return F.pad(t, (0, width - t.shape[-1]), value=fill)


@dataclass
class Sample:
    """One item of :class:`OCRDataset`.

    Attributes:
        image: ``(3, H, w)`` at the image's own width (``w`` at most the model's width).
        target: class indices of the label (empty for evaluation-only labels).
        text, path: the label and the image file.
        fill: the value that pads this image (its background level).
        centres: where the generator drew each character's centre, in input pixels from
            the left (from ``meta.jsonl``), or None.
    """

    image: torch.Tensor
    target: list[int]
    text: str
    path: str
    fill: float = 0.0
    centres: list[float] | None = None


@dataclass
class Batch:
    """A CTC batch.

    Attributes:
        images: ``(B, 3, H, W)`` float, each image right-padded with its background to the
            widest of the batch (rounded up to a multiple of :data:`WIDTH_PER_STEP`).
        targets: ``(sum of target lengths,)`` long, the concatenated class indices (no blanks).
        target_lengths: ``(B,)`` long.
        texts: the B label strings.
        paths: the B image paths.
        widths: ``(B,)`` long, each image's own width before padding.
        frame_targets: ``(B, T)`` long, the generator's alignment as one class per frame
            (the character whose centre falls in the frame, blank elsewhere, -100 on
            padding), or None when some sample has no recorded alignment.
    """

    images: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]
    paths: list[str]
    widths: torch.Tensor | None = None
    frame_targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def frames(self) -> torch.Tensor:
        """``(B,)`` the CTC frames each image really has: ``ceil(width / 4)`` (padding excluded)."""
        widths = self.widths if self.widths is not None else torch.full(
            (len(self),), self.images.shape[-1], dtype=torch.long)
        return (widths + WIDTH_PER_STEP - 1) // WIDTH_PER_STEP

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = {"non_blocking": non_blocking}
        opt = [None if t is None else t.to(device, **move) for t in (self.widths, self.frame_targets)]
        return Batch(self.images.to(device, **move), self.targets.to(device, **move),
                     self.target_lengths.to(device, **move), self.texts, self.paths, *opt)


class OCRDataset(Dataset):
    """Images and labels from a labelled folder.

    Each image keeps its own width (up to ``width``); :func:`ctc_collate` pads a batch to its
    widest image, and :meth:`widths` lets a sampler put lines of similar widths together.

    Args:
        folder: holds ``labels.txt`` (and ``images/``).
        charset: the model's charset.
        height, width: the network's input height and its largest input width.
        max_steps: the model's number of CTC frames T at ``width`` (default
            ``ctc_time_steps(width)``); labels that need more are rejected. ``None`` in
            ``check_length=False`` mode.
        skip_bad: leave out bad samples (bad labels, missing and unreadable images) and
            name them in the log, instead of raising one error that names them all.
        check_length: reject labels too long for CTC (turn off for evaluation).
        targets: encode labels as CTC targets (training). With ``False`` (evaluation) a
            label may hold characters outside the charset: it is kept as text, with an
            empty target, and :attr:`unknown_labels` counts such labels.
        normalize: how pixels become input (:func:`normalize_pixels`).
        limit: keep only the first ``limit`` samples.
        cache_mb: keep up to this many megabytes of prepared lines (decoded, resized and
            normalised; a grey line as its one channel) in memory, so that a line seen again
            is not decoded again; 0: none. Training reads every line several times and, on a
            CPU, loads in the training process: the ``laptop`` profile's 48,000 lines take
            about 700 MB and their loading was 15 % of a step (benchmarks/RESULTS.md).
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
        normalize: Normalize = "grey",
        limit: int | None = None,
        cache_mb: float = 0.0,
    ) -> None:
        self.folder = Path(folder)
        self.charset = charset
        self.height, self.width = height, width
        self.skip_bad = skip_bad
        self.normalize = normalize
        steps = (max_steps or ctc_time_steps(width)) if check_length and targets else None
        self.targets = targets
        self.items: list[LabelLine] = []
        self.unknown_labels = 0
        #: every sample left out (``"labels.txt:N: why"``), with ``skip_bad``
        self.skipped: list[str] = []
        for item in read_lmdb_labels(self.folder) if is_lmdb(self.folder) else read_labels(self.folder):
            if not targets and item.text and charset.unknown(item.text):
                self.unknown_labels += 1
                why = None
            else:
                why = check_label(item.text, charset, steps)
            if why is None and not image_exists(item.path):
                why = f"image file not found: {item.path}"
            if why is None:
                self.items.append(item)
            else:
                self.skipped.append(f"{item.source}: {why}")
            if limit is not None and len(self.items) >= limit:
                break
        if self.skipped:
            report = bad_sample_report(self.folder, self.skipped)
            if not skip_bad:
                raise DataError(report + "\n(skip_bad=True, or --skip-bad, goes on without them)")
            log.warning("skipped %s", report)
        self.bad_images = 0
        self._meta: dict[str, dict] | None = None
        self._centres: dict[str, list[float]] | None = None
        self._cache: dict[int, tuple[torch.Tensor, float, float]] = {}
        self._cache_room = int(cache_mb * 2**20)

    def __len__(self) -> int:
        return len(self.items)

    def meta(self) -> dict[str, dict]:
        """The generator's ``meta.jsonl`` rows by image name (read once; empty without one)."""
        if self._meta is None:
            self._meta = read_meta(self.folder)
        return self._meta

    def widths(self) -> list[int]:
        """Every sample's input width (pixels at the network's height, at most ``width``),
        from ``meta.jsonl`` when the generator wrote one, else from the image headers."""
        meta = self.meta()
        out = []
        for item in self.items:
            row = meta.get(item.path.relative_to(self.folder).as_posix()) if meta else None
            if row is not None and "width" in row:
                w, h = row["width"], row.get("height", IMAGE_HEIGHT)
            else:
                try:
                    w, h = image_size(item.path)
                except (OSError, UnidentifiedImageError, ValueError):
                    w, h = self.width, self.height  # unreadable: reported when it is loaded
            out.append(max(1, min(self.width, round(w * self.height / max(1, h)))))
        return out

    def input_widths(self) -> list[int]:
        """The width each sample enters the network at: :meth:`widths`, widened as
        :meth:`__getitem__` widens a line too narrow for the frames its label needs."""
        if not self.targets:
            return self.widths()
        return [max(w, min(self.width, WIDTH_PER_STEP * ctc_min_length(item.text))) if item.text
                else w for w, item in zip(self.widths(), self.items)]

    def centres(self, i: int) -> list[float] | None:
        """Sample ``i``'s character centres in input pixels (from ``meta.jsonl``), or None."""
        if self._centres is None:
            self._centres = {}
            for name, row in self.meta().items():
                if "centres" in row:
                    scale = self.height / row.get("height", IMAGE_HEIGHT)
                    self._centres[name] = [x * scale for x in row["centres"]]
        item = self.items[i]
        xs = self._centres.get(item.path.relative_to(self.folder).as_posix())
        return xs if xs is not None and len(xs) == len(item.text) else None

    def image(self, i: int) -> Image.Image | None:
        """Sample ``i``'s image as RGB, or None where it cannot be read and ``skip_bad`` is on.

        Raises:
            DataError: naming the file and the line of ``labels.txt`` that lists it.
        """
        item = self.items[i]
        try:
            return load_image(item.path)
        except DataError as err:
            if not self.skip_bad:
                raise DataError(f"{err} (listed at {item.source})") from None
            self.bad_images += 1
            log.warning("skipping unreadable image: %s", err)
            return None

    def prepared(self, i: int) -> tuple[torch.Tensor, float, float] | None:
        """Sample ``i`` as network input: ``(3, height, w)``, its padding value and the width
        it has at ``height`` before any squeezing (from the cache where it is kept,
        ``cache_mb``); None where its image cannot be read and ``skip_bad`` is on."""
        hit = self._cache.get(i)
        if hit is not None:
            t, fill, natural = hit
            return t.expand(3, -1, -1), fill, natural
        img = self.image(i)
        if img is None:
            return None
        tensor, fill = to_input(img, self.height, self.width, self.normalize)
        natural = img.width * self.height / img.height
        if self._cache_room > 0:
            # a grey line is one channel three times (normalize_pixels): keep one
            keep = tensor[:1].clone() if self.normalize == "grey" else tensor
            self._cache_room -= keep.numel() * keep.element_size()
            self._cache[i] = (keep, fill, natural)
        return tensor, fill, natural

    def __getitem__(self, i: int) -> Sample | None:
        got = self.prepared(i)
        if got is None:
            return None
        item = self.items[i]
        tensor, fill, natural = got
        target = self.charset.encode(item.text) if self.targets else []
        if target:  # room for the label: len + repeats frames, whatever the font's width
            need = min(self.width, WIDTH_PER_STEP * ctc_min_length(item.text))
            tensor = pad_to(tensor, need, fill)
        centres = self.centres(i) if target else None
        if centres is not None and natural > self.width:  # squeezed to the largest width
            centres = [x * self.width / natural for x in centres]
        return Sample(tensor, target, item.text, str(item.path), fill, centres)


def ctc_collate(samples: Sequence[Sample | None], fixed_width: int | None = None,
                min_width: int = 0) -> Batch:
    """Stack samples into a :class:`Batch`, padding each image with its own background to the
    widest (a multiple of :data:`WIDTH_PER_STEP`); ``None`` (skipped) samples are dropped.

    With ``fixed_width``, every image is padded to that width and counts all of its frames,
    padding included: the original project's fixed-size input (for comparisons). With
    ``min_width``, the batch is padded to at least that width (the frames are the lines' own):
    a distributed rank pads its share as wide as the whole global batch.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise DataError("every sample of this batch was unreadable")
    widths = torch.tensor([s.image.shape[-1] for s in kept], dtype=torch.long)
    width = -(-max(int(widths.max()), min_width) // WIDTH_PER_STEP) * WIDTH_PER_STEP
    if fixed_width is not None:
        width = max(width, fixed_width)
        widths = torch.full_like(widths, width)
    batch = Batch(
        images=torch.stack([pad_to(s.image, width, s.fill) for s in kept]),
        targets=torch.tensor([t for s in kept for t in s.target], dtype=torch.long),
        target_lengths=torch.tensor([len(s.target) for s in kept], dtype=torch.long),
        texts=[s.text for s in kept],
        paths=[s.path for s in kept],
        widths=widths,
    )
    if all(s.centres is not None for s in kept):
        batch.frame_targets = alignment_targets([s.target for s in kept], [s.centres for s in kept],
                                                ctc_time_steps(width), batch.frames.tolist())
    return batch


def alignment_targets(targets: Sequence[Sequence[int]], centres: Sequence[Sequence[float]],
                      T: int, frames: Sequence[int]) -> torch.Tensor:
    """One class per frame from the generator's character centres.

    Frame ``t`` covers input columns ``4t .. 4t + 3``; a character goes to the frame its centre
    falls in (or the next free one, when two centres share a frame), every other frame of the
    line is the blank, and frames past the line's own ``frames`` are -100 (ignored).

    Shape:
        ``B`` targets and centres -> ``(B, T)`` long
    """
    out = torch.full((len(targets), T), -100, dtype=torch.long)
    for b, (tgt, xs, n) in enumerate(zip(targets, centres, frames)):
        n = min(n, T)
        out[b, :n] = 0
        last = -1
        for c, x in zip(tgt, xs):
            t = max(last + 1, min(n - 1, int(x // WIDTH_PER_STEP)))
            if t >= n:
                break
            out[b, t], last = c, t
    return out
