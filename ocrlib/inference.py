"""Reading images with a trained checkpoint: ``ocrlib infer`` and ``ocrlib eval`` (notebook 05)."""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .checkpoint import load_model
from .combine import AS_GIVEN, View, Way, check_rule, combine
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
            (:func:`ocrlib.recrop.crop_rows`) read beside each line as given (:attr:`combine`
            makes one reading of them all). ``()`` reads each line once, as given. Lines
            already cut close to their text are read once whatever this says.
        stretch: factors by which each line as given is also read wider or narrower
            (:func:`ocrlib.recrop.stretch_width`; not its crops). ``()`` reads it at its own
            width only.
        flip_unsure: also read the lines whose ink polarity was guessed rather than read
            (:func:`ocrlib.data.unsure_polarity`: mostly lines on photographs) with the other
            polarity; each crop too. Other lines are read in one polarity. Only for grey
            input (``normalize="grey"``).
        colour_view: also read each line in the grey that best tells its text rows from its
            margins (:func:`ocrlib.normalize.colour_view`), at each stretch and crop as the
            line as given: ink that differs from its background in colour more than in
            luminance (blue on orange) vanishes in the luminance the network reads. Lines
            whose view is their luminance again (black on white, any grey line) are read once.
        combine: how the readings of a line's views (as given, crops, stretches, colour view,
            other polarity: :meth:`ways`) make one (:mod:`ocrlib.combine`): ``"mean"``, the
            reading with the highest probability averaged over all the views; ``"surest"``,
            the reading whose own view is surest of it.
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
    combine: str = "mean"

    def __post_init__(self) -> None:
        check_rule(self.combine)
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

    def _views(self, batch: Batch, way: Way = AS_GIVEN) -> list[list[View]]:
        """Each line of a prepared batch read as it is and, where its polarity is unsure
        (:attr:`flip_unsure`), negated: its one or two views, read ``way``."""
        lp = self.log_probs(batch.images)
        frames = batch.frames.tolist()
        views = [[View(d, lp[k, : frames[k]], way)]
                 for k, d in enumerate(self.decode(lp, batch.frames))]
        if not self.flip_unsure or self.model.cfg.normalize != "grey":
            return views
        unsure = torch.nonzero(unsure_polarity(batch.images, batch.widths)).flatten()
        if len(unsure):
            # the input is standardised and padded with its own level: negating it is the
            # line read with the other polarity, padding included
            other = self.log_probs(-batch.images[unsure])
            for k, d, row in zip(unsure.tolist(), self.decode(other, batch.frames[unsure]), other):
                views[k].append(View(d, row[: frames[k]], way, flipped=True))
        return views

    def _combine(self, views: list[View]) -> View:
        return combine(views, self.combine, self.model.charset, self.top_n)

    def ways(self) -> list[Way]:
        """The ways each line is read: as given, at each :attr:`stretch`, at each :attr:`recrop`
        crop, and with :attr:`colour_view` the view and each of those in the view (a way that
        would not change a line is skipped for it: :meth:`Way.image`)."""
        ways = [AS_GIVEN]
        ways += [Way(partial(stretch_width, factor=f), factor=f) for f in self.stretch]
        ways += [Way(partial(crop_rows, pad=p), pad=p) for p in self.recrop]
        if self.colour_view:
            ways += [replace(w, colour=True) for w in ways]
        return ways

    def read(self, images: Sequence[Image.Image]) -> list[Decoded]:
        """Read PIL images (any mode), each in every one of its :meth:`ways` (and, where its
        polarity is unsure, each of those negated: :attr:`flip_unsure`), making one reading of
        them by the :attr:`combine` rule."""
        return [self._combine(v).reading for v in self._read_ways([as_rgb(im) for im in images])]

    def _read_ways(self, lines: list[Image.Image]) -> list[list[View]]:
        """The views of RGB ``lines``: each read in every one of its :meth:`ways`, one way at a
        time (a batch no larger than the lines given), its colour view made once."""
        views: list[list[View]] = [[] for _ in lines]
        coloured = [colour_view(im) if self.colour_view else None for im in lines]
        for way in self.ways():
            seen = [(k, im) for k, line in enumerate(lines)
                    if (im := way.image(line, coloured[k])) is not None]
            if seen:
                for (k, _), vs in zip(seen, self._read_images([im for _, im in seen], way)):
                    views[k] += vs
        return views

    def _read_images(self, images: list[Image.Image], way: Way) -> list[list[View]]:
        """The views of images already turned ``way`` (:meth:`_views` of :meth:`prepare`)."""
        return self._views(self.prepare(images), way)

    def evaluate(self, folder: str | os.PathLike[str], batch_size: int = 64,
                 limit: int | None = None, skip_bad: bool = False) -> dict[str, Any]:
        """Score the model on a labelled folder (``labels.txt`` as ``ocrlib synth`` writes it),
        reading each line as :meth:`read` does.

        Returns :func:`ocrlib.metrics.scores` (cer, wer, accuracy, cer_ci, ned, n) plus
        ``images_per_s`` (loading, model and decoding), ``unknown_labels`` and the
        per-sample ``references``, ``predictions``, ``confidences``, ``alternatives``,
        ``paths`` and where each reading came from (the view that carries it, under
        ``"mean"`` the one surest of it): ``recrops`` (the :attr:`recrop` margin, None for the
        line as given), ``stretches`` (the :attr:`stretch` factor, None for the line at its
        own width), ``flipped`` (read with the other polarity, :attr:`flip_unsure`) and
        ``colour`` (read in its :attr:`colour_view`). Labels with characters the model cannot
        produce are kept as they are (they count as errors) and a warning says how many there
        were. Bad samples (empty labels, missing or unreadable images) raise one error naming
        them all, or with ``skip_bad`` are left out of the scores and listed under ``skipped``.
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
        chosen: dict[int, View] = {}
        for k in range(0, len(order), batch_size):  # each image loaded once, read every way
            loaded = [(i, im) for i in order[k:k + batch_size] if (im := ds.image(i)) is not None]
            for (i, _), views in zip(loaded, self._read_ways([im for _, im in loaded])):
                chosen[i] = self._combine(views)
        seconds = time.perf_counter() - t0
        kept = sorted(chosen)
        items = [ds.items[i] for i in kept]
        refs = [it.text for it in items]
        readings = [chosen[i].reading for i in kept]
        unreadable = [f"{it.source}: cannot read {it.path}" for k, it in enumerate(ds.items)
                      if k not in chosen]
        return {
            **scores(refs, [d.text for d in readings]),
            "images_per_s": len(refs) / max(seconds, 1e-9),
            "unknown_labels": ds.unknown_labels, "references": refs,
            "predictions": [d.text for d in readings],
            "confidences": [d.confidence for d in readings],
            "alternatives": [d.alternatives for d in readings],
            "paths": [str(it.path) for it in items], "skipped": ds.skipped + unreadable,
            "recrops": [chosen[i].way.pad for i in kept],
            "stretches": [chosen[i].way.factor for i in kept],
            "flipped": [chosen[i].flipped for i in kept],
            "colour": [chosen[i].way.colour for i in kept],
        }


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
