"""One reading from a line read several ways (notebook 05).

:class:`ocrlib.inference.Recognizer` reads a line as given and, where they change it, also cut
to its ink rows, wider and narrower, in its colour view and (where the ink's polarity is a
guess) negated. Each way is a *view* of the line, and each view gives a reading with its
probability ``P(text | view)``. Two rules make one reading of them:

- ``"surest"``: the reading whose own view is surest of it. Simple, but a view that is sure of
  the wrong thing wins: cut to its ink, a lone ``c`` looks like a ``C``.
- ``"mean"``: every view's reading is scored under every view (the CTC forward algorithm,
  :func:`ocrlib.decoding.labelling_log_prob`) and the reading with the highest probability
  *averaged over the views* wins. That treats the views as a mixture, ``P(text | line) =
  mean_k P(text | view k)``: a reading that one view is sure of and the others find unlikely
  loses to one that most views find likely. On the ``laptop`` models it read better than the
  surest view on 23 of 25 model-and-set pairs measured (``benchmarks/RESULTS.md``, "One reading
  from all the views").

A line read one way only gets that reading, with its own probability, under either rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from .charset import Charset
from .decoding import Decoded, labelling_log_prob

#: the rules that make one reading of a line's views
COMBINE_RULES = ("mean", "surest")


def check_rule(rule: str) -> None:
    """Raises ValueError naming the rules, for a ``rule`` not in :data:`COMBINE_RULES`."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"combine must be one of {COMBINE_RULES}, got {rule!r}")


@dataclass(frozen=True)
class Way:
    """One way of reading a line.

    Attributes:
        crop: turns the image read (the line, or its colour view) into another (a crop, a
            stretch), or returns None where it would not change it (then this way is skipped
            for the line); None: the image as it is.
        pad: the ink crop's margin (:func:`ocrlib.recrop.crop_rows`), if this way cuts.
        factor: the stretch factor (:func:`ocrlib.recrop.stretch_width`), if it stretches.
        colour: whether it reads the line's colour view (:func:`ocrlib.normalize.colour_view`)
            instead of the line.
    """

    crop: Callable[[Image.Image], Image.Image | None] | None = None
    pad: float | None = None
    factor: float | None = None
    colour: bool = False

    def image(self, line: Image.Image, view: Image.Image | None) -> Image.Image | None:
        """The image this way reads of ``line``, whose colour view is ``view`` (None: it has
        none); None where this way is skipped for the line."""
        base = view if self.colour else line
        if base is None or self.crop is None:
            return base
        return self.crop(base)


AS_GIVEN = Way()


@dataclass
class View:
    """A line read one way.

    Attributes:
        reading: the decoded text and ``P(text | this view)``.
        log_probs: ``(T, V)`` the network's log-probabilities for this view's frames, or None
            (enough for ``"surest"``).
        way: how the line was read.
        flipped: whether it was read with the other polarity.
    """

    reading: Decoded
    log_probs: torch.Tensor | None = None
    way: Way = AS_GIVEN
    flipped: bool = False


def mixture_log_probs(log_probs: Sequence[torch.Tensor], labels: Sequence[Sequence[int]]
                      ) -> torch.Tensor:
    """``log mean_k P(labels[c] | view k)`` for each labelling, by the CTC forward algorithm.

    A labelling that cannot fit in a view's frames has probability 0 in that view.

    Shape:
        log_probs: K tensors ``(T_k, V)`` (one line read K ways); labels: C class-index lists.
        Returns ``(C,)`` float32.
    """
    if not log_probs or not labels:
        raise ValueError("need at least one view and one labelling")
    k, c = len(log_probs), len(labels)
    t_max = max(lp.shape[0] for lp in log_probs)
    stacked = torch.zeros(k, t_max, log_probs[0].shape[1])
    for j, lp in enumerate(log_probs):
        stacked[j, : lp.shape[0]] = lp.detach().float().cpu()
    lengths = torch.tensor([lp.shape[0] for lp in log_probs]).repeat_interleave(c)
    scores = labelling_log_prob(stacked.repeat_interleave(c, dim=0), list(labels) * k, lengths)
    return torch.logsumexp(scores.view(k, c), dim=0) - math.log(k)


def combine(views: Sequence[View], rule: str, charset: Charset, top_n: int = 1) -> View:
    """One view of ``views`` (one line read several ways) carrying the line's reading.

    ``"surest"``: the view whose reading is the most probable under itself (the first of equals).
    ``"mean"``: the readings of all views (and their alternatives) are the candidates; the one
    with the highest mean probability over the views (:func:`mixture_log_probs`) wins, carried
    by the view surest of it, with that mean as its confidence and, for ``top_n`` > 1, the next
    candidates by the same measure as its alternatives.
    """
    check_rule(rule)
    if not views:
        raise ValueError("no views to combine")
    if rule == "surest" or len(views) == 1:
        return max(views, key=lambda v: v.reading.confidence)
    texts = list(dict.fromkeys(t for v in views
                               for t in (v.reading.text, *(a for a, _ in v.reading.alternatives))))
    missing = [k for k, v in enumerate(views) if v.log_probs is None]
    if missing:
        raise ValueError(f"the 'mean' rule needs every view's log-probabilities; "
                         f"views {missing} have none")
    scores = mixture_log_probs([v.log_probs for v in views], [charset.encode(t) for t in texts])
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    best = texts[order[0]]
    carrier = max((v for v in views if v.reading.text == best), key=lambda v: v.reading.confidence,
                  default=None)
    if carrier is None:  # only an alternative reads it: the view that ranked it
        carrier = next(v for v in views if any(a == best for a, _ in v.reading.alternatives))
    alternatives = [(texts[i], math.exp(float(scores[i]))) for i in order[1:top_n]]
    return replace(carrier, reading=Decoded(best, math.exp(float(scores[order[0]])), alternatives))
