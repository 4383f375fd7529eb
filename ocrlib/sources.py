"""What a run trains on: its sources (folders or LMDBs), their sizes and their shares of a batch.

The batches of a run are a pure function of the seed, the step and the sources
(:class:`ocrlib.sampler.StepSampler`, :class:`ocrlib.sampler.MixSampler`), so a resumed run
continues the interrupted one exactly only if it reads the same sources in the same shares.
The resume checkpoint keeps a :class:`Sources` record (``"data"``) and :func:`check_resumed`
refuses a resume on other data, naming what the interrupted run had: the ``--train`` and
``--mix`` to give.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointMismatchError
from .folder import read_manifest

log = logging.getLogger(__name__)


def as_sources(train_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """One training source or several, as a list of paths."""
    if isinstance(train_dir, (str, os.PathLike)):
        return [Path(train_dir)]
    return [Path(t) for t in train_dir]


def check_disjoint(train_dir: Path, val_dir: Path) -> None:
    """Refuse a validation set that is the training set or was drawn from its random stream."""
    if train_dir.resolve() == val_dir.resolve():
        raise ValueError(f"the validation folder is the training folder ({train_dir})")
    a, b = read_manifest(train_dir), read_manifest(val_dir)
    if a and b and (a["seed"], a["stream"]) == (b["seed"], b["stream"]):
        raise ValueError(f"{val_dir} and {train_dir} were generated from the same seed and split: "
                         "the validation set would repeat training samples")


@dataclass(frozen=True)
class Sources:
    """The training data of a run, as its resume checkpoint records it.

    Attributes:
        paths: each source as given (POSIX form).
        lines: the lines each source holds (after any bad ones were skipped).
        mix: the mixing ratios as given (``--mix``), or None: in proportion to ``lines``.
    """

    paths: tuple[str, ...]
    lines: tuple[int, ...]
    mix: tuple[float, ...] | None = None

    @classmethod
    def of(cls, sources: Sequence[Path], lines: Sequence[int],
           mix: Sequence[float] | None) -> Sources:
        return cls(tuple(p.as_posix() for p in sources), tuple(int(n) for n in lines),
                   tuple(float(r) for r in mix) if mix is not None else None)

    def ratios(self) -> list[float]:
        """The mixing ratios the sampler is given: ``mix``, or else the sources' sizes."""
        return list(self.mix) if self.mix is not None else [float(n) for n in self.lines]

    def shares(self) -> list[float]:
        """Each source's share of every batch (summing to 1)."""
        ratios = self.ratios()
        total = sum(ratios)
        return [r / total for r in ratios]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sources:
        mix = d.get("mix")
        return cls(tuple(d["paths"]), tuple(d["lines"]), tuple(mix) if mix is not None else None)

    def describe(self) -> str:
        """E.g. ``data/a (48000 lines, 70%) + data/b (9000 lines, 30%)``."""
        return " + ".join(f"{p} ({n} lines, {100 * s:.0f}%)"
                          for p, n, s in zip(self.paths, self.lines, self.shares()))

    def arguments(self) -> str:
        """The command-line arguments that give these sources: ``--train ... [--mix ...]``."""
        out = "--train " + " ".join(self.paths)
        if self.mix is not None:
            out += " --mix " + " ".join(f"{r:g}" for r in self.mix)
        return out


def check_resumed(saved: dict[str, Any] | None, now: Sources, path: Path) -> None:
    """Refuse to resume the run saved at ``path`` on other training data than it had.

    ``saved`` is the checkpoint's ``"data"`` entry (None in a checkpoint written before it
    was kept: nothing to check). The sizes and shares of the sources must agree, since the
    batches are drawn from them; sources that moved (other paths, the same sizes and shares)
    only get a warning.

    Raises:
        CheckpointMismatchError: naming both, and the arguments that resume as the run began.
    """
    if saved is None:
        return
    was = Sources.from_dict(saved)
    same_draw = was.lines == now.lines and all(
        abs(a - b) < 1e-9 for a, b in zip(was.shares(), now.shares()))
    if not same_draw:
        raise CheckpointMismatchError(
            f"{path} was trained on {was.describe()}; this run would train on {now.describe()}: "
            f"its batches would not continue the interrupted run's. Resume with "
            f"`{was.arguments()}`, or start afresh (without --resume).")
    if was.paths != now.paths:
        log.warning("resuming %s on %s, which it was trained on as %s (the same sizes and shares)",
                    path, " + ".join(now.paths), " + ".join(was.paths))
