"""Reading images with a trained checkpoint: ``ocrlib infer`` and ``ocrlib eval`` (notebook 05)."""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader

from .checkpoint import load_model
from .data import (
    Batch, DataError, OCRDataset, Sample, as_rgb, ctc_collate, load_image, to_input,
    unsure_polarity,
)
from .decoding import Decoded, decode
from .metrics import scores
from .model import MambaOCR
from .normalize import colour_view
from .recrop import (
    DEFAULT_RECROP, DEFAULT_STRETCH, MAX_RECROP, STRETCH_RANGE, crop_rows, stretch_width,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


@dataclass
class Recognizer:
    """A trained model ready to read lines.

    Attributes:
        model: the network, in eval mode.
        decoder: ``"greedy"`` or ``"beam"`` (CTC prefix beam search).
        beam_width: beam size for ``"beam"``.
        top_n: with ``"beam"``, also return this many readings in all (the best first)
            as :attr:`Decoded.alternatives`.
        max_width: lines wider than this (in pixels at the model's height) are squeezed to it;
            default twice the width the model was trained at. Narrower lines are read at their
            own width: the network is convolutional and the encoder recurrent, so a line
            longer than any in training is read as it is rather than squeezed out of shape.
        recrop: margins (fractions of the ink's height) of the crops to the ink rows
            (:func:`ocrlib.recrop.crop_rows`) read beside each line as given; the reading
            the model gives the highest confidence wins. ``()`` reads each line once, as
            given. Lines already cut close to their text are read once whatever this says.
        stretch: factors by which each line as given is also read wider or narrower
            (:func:`ocrlib.recrop.stretch_width`; not its crops); the surest reading wins.
            ``()`` reads it at its own width only.
        flip_unsure: also read the lines whose ink polarity was guessed rather than read
            (:func:`ocrlib.data.unsure_polarity`: mostly lines on photographs) with the other
            polarity, keeping the more confident reading; each crop too. Other lines are
            read once. Only for grey input (``normalize="grey"``).
        colour_view: also read each line in the grey that best tells its text rows from its
            margins (:func:`ocrlib.normalize.colour_view`), at each stretch and crop as the
            line as given, keeping the surest reading: ink that differs from its background in
            colour more than in luminance (blue on orange) vanishes in the luminance the
            network reads. Lines whose view is their luminance again (black on white, any grey
            line) are read once.
    """

    model: MambaOCR
    decoder: str = "greedy"
    beam_width: int = 10
    top_n: int = 1
    max_width: int | None = None
    recrop: tuple[float, ...] = DEFAULT_RECROP
    flip_unsure: bool = True
    stretch: tuple[float, ...] = DEFAULT_STRETCH
    colour_view: bool = True

    def __post_init__(self) -> None:
        self.recrop, self.stretch = tuple(self.recrop), tuple(self.stretch)
        if any(not 0 <= p <= MAX_RECROP for p in self.recrop):
            raise ValueError(f"recrop margins must lie in 0..{MAX_RECROP:g} (fractions of the "
                             f"ink's height), got {self.recrop}")
        lo, hi = STRETCH_RANGE
        if any(not lo <= f <= hi for f in self.stretch):
            raise ValueError(f"stretch factors must lie in {lo:g}..{hi:g}, got {self.stretch}")
        if self.decoder not in ("greedy", "beam"):
            raise ValueError(f"decoder must be greedy or beam, got {self.decoder!r}")
        if self.beam_width < 1:
            raise ValueError(f"beam width must be at least 1, got {self.beam_width}")
        if self.max_width is None:
            self.max_width = 2 * self.model.cfg.width

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str = "cpu", **kw: Any) -> Recognizer:
        model, _ = load_model(path, device=device)
        return cls(model, **kw)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, T, V)`` log-probabilities (float32)."""
        self.model.eval()
        return self.model(images.to(self.device)).float().log_softmax(-1)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[Decoded]:
        """Decode ``(B, T, V)`` log-probabilities with the chosen decoder; ``lengths`` ``(B,)``
        are the frames of each line (padding excluded; default T)."""
        return decode(log_probs, self.model.charset, self.decoder, self.beam_width, self.top_n,
                      lengths)

    def prepare(self, images: Sequence[Image.Image]) -> Batch:
        """PIL images (any mode, as :func:`ocrlib.data.as_rgb` converts them) -> the batch the
        model reads: ``images`` ``(B, 3, H, W)`` resized, normalised and padded, ``frames``.
        The images are taken as given (no :attr:`recrop`)."""
        cfg = self.model.cfg
        samples = []
        for k, im in enumerate(images):
            t, fill = to_input(as_rgb(im), cfg.height, self.max_width, cfg.normalize)
            samples.append(Sample(t, [], "", f"<image {k}>", fill))
        return ctc_collate(samples)

    def read_batch(self, batch: Batch) -> tuple[list[Decoded], list[bool]]:
        """Read a prepared batch: the readings, and for each whether it came from the other
        polarity (:attr:`flip_unsure`)."""
        out = self.decode(self.log_probs(batch.images), batch.frames)
        flipped = [False] * len(out)
        if not self.flip_unsure or self.model.cfg.normalize != "grey":
            return out, flipped
        unsure = torch.nonzero(unsure_polarity(batch.images, batch.widths)).flatten()
        if len(unsure):
            # the input is standardised and padded with its own level: negating it is the
            # line read with the other polarity, padding included
            other = self.decode(self.log_probs(-batch.images[unsure]), batch.frames[unsure])
            for k, d in zip(unsure.tolist(), other):
                if d.confidence > out[k].confidence:
                    out[k], flipped[k] = d, True
        return out, flipped

    def _read_once(self, images: Sequence[Image.Image]) -> list[Decoded]:
        return self.read_batch(self.prepare(images))[0]

    def read(self, images: Sequence[Image.Image]) -> list[Decoded]:
        """Read PIL images (any mode): each as given, at each :attr:`stretch` of it and at each
        :attr:`recrop` crop that changes it, and the same for its :attr:`colour_view` where it
        has one (and, where its polarity is unsure, each of those with the other polarity:
        :attr:`flip_unsure`), keeping the most confident reading."""
        rgb = [as_rgb(im) for im in images]
        best = self._read_once(rgb) if rgb else []
        passes = self._variants(list(enumerate(rgb)))
        if self.colour_view:
            views = [(k, v) for k, im in enumerate(rgb) if (v := colour_view(im)) is not None]
            passes += [views, *self._variants(views)]
        for variants in passes:  # one pass at a time: a batch no larger than the images given
            if variants:
                for (k, _), d in zip(variants, self._read_once([v for _, v in variants])):
                    if d.confidence > best[k].confidence:
                        best[k] = d
        return best

    def _variants(self, lines: list[tuple[int, Image.Image]]
                  ) -> list[list[tuple[int, Image.Image]]]:
        """The passes :meth:`read` makes beside ``lines`` (index, image) as given: one for each
        :attr:`stretch` and one for each :attr:`recrop` (the lines that crop changes)."""
        passes = [[(k, stretch_width(im, f)) for k, im in lines] for f in self.stretch]
        passes += [[(k, c) for k, im in lines if (c := crop_rows(im, pad)) is not None]
                   for pad in self.recrop]
        return passes

    def evaluate(self, folder: str | os.PathLike[str], batch_size: int = 64,
                 limit: int | None = None, skip_bad: bool = False) -> dict[str, Any]:
        """Score the model on a labelled folder (``labels.txt`` as ``ocrlib synth`` writes it).

        Returns :func:`ocrlib.metrics.scores` (cer, wer, accuracy, cer_ci, ned, n) plus
        ``images_per_s`` (loading, model and decoding), ``unknown_labels`` and the
        per-sample ``references``, ``predictions``, ``confidences``, ``alternatives``,
        ``paths``, ``recrops`` (the :attr:`recrop` margin each reading came from, None
        for the line as given), ``stretches`` (the :attr:`stretch` factor it came from, None
        for the line at its own width) and ``flipped`` (whether it was read with the other
        polarity, :attr:`flip_unsure`) and ``colour`` (whether it was read in its
        :attr:`colour_view`). Labels with characters the model cannot produce are kept as
        they are (they count as errors) and a warning says how many there were. Bad samples (empty
        labels, missing or unreadable images) raise one error naming them all, or with
        ``skip_bad`` are left out of the scores and listed under ``skipped``.
        """
        cfg = self.model.cfg
        ds = OCRDataset(folder, self.model.charset, cfg.height, self.max_width, targets=False,
                        normalize=cfg.normalize, limit=limit or None, skip_bad=skip_bad)
        if ds.unknown_labels:
            log.warning("%s: %d labels hold characters outside the model's charset; "
                        "they are scored as they are", folder, ds.unknown_labels)
        t0 = time.perf_counter()
        # lines of similar widths in a batch (less padding to compute), results in file order
        order = sorted(range(len(ds)), key=ds.widths().__getitem__)
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        decoded, flipped = self._read_dataset(ds, batches)
        chosen: dict[int, float | None] = dict.fromkeys(decoded)
        stretched: dict[int, float | None] = dict.fromkeys(decoded)
        coloured = dict.fromkeys(decoded, False)
        ds.crop_only = True  # each crop pass reads only the lines its crop changes
        readable = [b for b in ([i for i in b if i in decoded] for b in batches) if b]
        passes = [(partial(stretch_width, factor=f), None, f, False) for f in self.stretch]
        passes += [(partial(crop_rows, pad=pad), pad, None, False) for pad in self.recrop]
        if self.colour_view:
            passes += [(colour_view, None, None, True)] + [
                (partial(_in_colour_view, then=crop), pad, factor, True)
                for crop, pad, factor, _ in passes]
        for crop, pad, factor, colour in passes:
            ds.crop = crop
            crops, crop_flipped = self._read_dataset(ds, readable)
            for i, d in crops.items():
                if d.confidence > decoded[i].confidence:
                    decoded[i], flipped[i] = d, crop_flipped[i]
                    chosen[i], stretched[i], coloured[i] = pad, factor, colour
        seconds = time.perf_counter() - t0
        kept = sorted(decoded)
        items = [ds.items[i] for i in kept]
        refs = [it.text for it in items]
        hyps = [decoded[i].text for i in kept]
        unreadable = [f"{it.source}: cannot read {it.path}" for k, it in enumerate(ds.items)
                      if k not in decoded]
        return {
            **scores(refs, hyps), "images_per_s": len(refs) / max(seconds, 1e-9),
            "unknown_labels": ds.unknown_labels, "references": refs, "predictions": hyps,
            "confidences": [decoded[i].confidence for i in kept],
            "alternatives": [decoded[i].alternatives for i in kept],
            "paths": [str(it.path) for it in items], "skipped": ds.skipped + unreadable,
            "recrops": [chosen[i] for i in kept], "stretches": [stretched[i] for i in kept],
            "flipped": [flipped[i] for i in kept], "colour": [coloured[i] for i in kept],
        }

    def _read_dataset(self, ds: OCRDataset, batches: list[list[int]]
                      ) -> tuple[dict[int, Decoded], dict[int, bool]]:
        """Read ``ds`` batch by batch; the readings and whether each was read with the other
        polarity, by dataset index (samples the dataset gives as None, unreadable images under
        ``skip_bad`` or lines a ``crop_only`` pass leaves alone, are missing)."""
        loader = DataLoader(ds, batch_sampler=batches, collate_fn=_collate_some)
        decoded: dict[int, Decoded] = {}
        flipped: dict[int, bool] = {}
        for idx, batch in zip(batches, loader):
            if batch is None:
                continue
            (out, flips), j = self.read_batch(batch), 0
            for i in idx:  # the collate drops unreadable images (skip_bad): match by path
                if j < len(batch.paths) and batch.paths[j] == str(ds.items[i].path):
                    decoded[i], flipped[i], j = out[j], flips[j], j + 1
        return decoded, flipped


def _in_colour_view(img: Image.Image, then: Callable[[Image.Image], Image.Image | None]
                    ) -> Image.Image | None:
    """``then`` applied to the :func:`~ocrlib.normalize.colour_view` of ``img``; None where
    the line has no view of its own or ``then`` leaves the view alone."""
    view = colour_view(img)
    return None if view is None else then(view)


def _collate_some(samples: Sequence[Sample | None]) -> Batch | None:
    """:func:`ctc_collate`, or None for a batch with no sample left."""
    return ctc_collate(samples) if any(s is not None for s in samples) else None


def expand_paths(args: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order."""
    out: list[Path] = []
    for arg in args:
        matches = sorted(glob.glob(arg)) if any(ch in arg for ch in "*?[") else [arg]
        if not matches:
            out.append(Path(arg))  # reported as missing by the caller
        for m in matches:
            p = Path(m)
            if p.is_dir():
                out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            else:
                out.append(p)
    return out


def infer_paths(rec: Recognizer, paths: Sequence[Path], batch_size: int = 64
                ) -> tuple[list[tuple[Path, Decoded]], list[tuple[Path, str]]]:
    """Read every path; returns ``(results, failures)`` where failures name the file and why."""
    results, failures = [], []
    for start in range(0, len(paths), batch_size):
        images, ok = [], []
        for p in paths[start:start + batch_size]:
            try:
                images.append(load_image(p))
                ok.append(p)
            except DataError as err:
                failures.append((p, str(err)))
        if images:
            results += list(zip(ok, rec.read(images)))
    return results, failures
