"""Character and word error rates (notebook 05), computed with jiwer.

CER = (substitutions + deletions + insertions) / reference characters, over the whole
corpus (not a mean of per-line rates: long lines weigh more). It is unbounded above: a
hypothesis with many insertions can score CER > 1. The normalised edit distance divides
each line's edits by the longer of the two strings instead, so it stays in [0, 1].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jiwer

EditKind = Literal["equal", "substitute", "insert", "delete"]


@dataclass(frozen=True)
class Edit:
    """One character of an alignment between a reference and a hypothesis.

    ``ref``/``hyp`` are the characters involved (``""`` for the side that has none:
    ``hyp`` of a deletion, ``ref`` of an insertion); ``ref_pos``/``hyp_pos`` their indices
    (for an insertion, ``ref_pos`` is where it falls in the reference; likewise ``hyp_pos``
    for a deletion).
    """

    kind: EditKind
    ref: str
    hyp: str
    ref_pos: int
    hyp_pos: int


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


def _fold(texts: Sequence[str], ignore_case: bool) -> list[str]:
    return [t.lower() for t in texts] if ignore_case else list(texts)


def cer(references: Sequence[str], hypotheses: Sequence[str], ignore_case: bool = False) -> float:
    """Corpus-level character error rate: total edits over total reference characters."""
    _check(references, hypotheses)
    if not references:
        return 0.0
    refs, hyps = _fold(references, ignore_case), _fold(hypotheses, ignore_case)
    if not any(refs):  # no reference characters to divide by
        return float("inf") if any(hyps) else 0.0
    return float(jiwer.cer(refs, hyps))


def wer(references: Sequence[str], hypotheses: Sequence[str], ignore_case: bool = False) -> float:
    """Corpus-level word error rate (words split on whitespace).

    On single-word labels this is the line error rate, ``1 - accuracy``.
    """
    _check(references, hypotheses)
    if not references:
        return 0.0
    refs, hyps = _fold(references, ignore_case), _fold(hypotheses, ignore_case)
    if not any(r.split() for r in refs):  # no reference words to divide by
        return float("inf") if any(h.split() for h in hyps) else 0.0
    return float(jiwer.wer(refs, hyps))


def accuracy(references: Sequence[str], hypotheses: Sequence[str], ignore_case: bool = False) -> float:
    """Fraction of lines read exactly."""
    _check(references, hypotheses)
    refs, hyps = _fold(references, ignore_case), _fold(hypotheses, ignore_case)
    return sum(r == h for r, h in zip(refs, hyps)) / max(1, len(refs))


def align(reference: str, hypothesis: str) -> list[Edit]:
    """A minimal character alignment of one pair, one :class:`Edit` per aligned position."""
    if not reference and not hypothesis:
        return []
    out = jiwer.process_characters(reference, hypothesis)
    edits: list[Edit] = []
    for chunk in out.alignments[0]:
        r0, r1, h0, h1 = chunk.ref_start_idx, chunk.ref_end_idx, chunk.hyp_start_idx, chunk.hyp_end_idx
        if chunk.type in ("equal", "substitute"):
            for i in range(r1 - r0):
                edits.append(Edit(chunk.type, reference[r0 + i], hypothesis[h0 + i], r0 + i, h0 + i))
        elif chunk.type == "delete":
            edits += [Edit("delete", reference[i], "", i, h0) for i in range(r0, r1)]
        else:
            edits += [Edit("insert", "", hypothesis[j], r0, j) for j in range(h0, h1)]
    return edits


def edit_distance(reference: str, hypothesis: str) -> int:
    """Levenshtein distance between two strings (characters)."""
    return sum(e.kind != "equal" for e in align(reference, hypothesis))


def sample_cer(reference: str, hypothesis: str, edits: list[Edit] | None = None) -> float:
    """One line's CER: its edits over its reference length (``inf`` for an empty reference
    with a non-empty hypothesis, 0 when both are empty). ``edits``: the pair's :func:`align`,
    when already at hand."""
    edits = align(reference, hypothesis) if edits is None else edits
    d = sum(e.kind != "equal" for e in edits)
    if not reference:
        return float("inf") if d else 0.0
    return d / len(reference)


def normalized_edit_distance(references: Sequence[str], hypotheses: Sequence[str],
                             ignore_case: bool = False) -> float:
    """Mean over lines of ``edits / max(len(reference), len(hypothesis))``, in [0, 1]."""
    _check(references, hypotheses)
    refs, hyps = _fold(references, ignore_case), _fold(hypotheses, ignore_case)
    if not refs:
        return 0.0
    return sum(edit_distance(r, h) / max(1, len(r), len(h)) for r, h in zip(refs, hyps)) / len(refs)


def error_counts(references: Sequence[str], hypotheses: Sequence[str]) -> Counter[tuple[str, str, str]]:
    """Every edit of every line, counted: ``(kind, reference char, hypothesis char) -> n``.

    ``kind`` is ``substitute``, ``insert`` or ``delete``; the absent side is ``""``.
    """
    _check(references, hypotheses)
    counts: Counter[tuple[str, str, str]] = Counter()
    for r, h in zip(references, hypotheses):
        if r != h:
            counts.update((e.kind, e.ref, e.hyp) for e in align(r, h) if e.kind != "equal")
    return counts


def scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Every corpus-level score at once: cer, wer, accuracy, cer_ci, ned, n."""
    return {
        "cer": cer(references, hypotheses), "wer": wer(references, hypotheses),
        "accuracy": accuracy(references, hypotheses),
        "cer_ci": cer(references, hypotheses, ignore_case=True),
        "ned": normalized_edit_distance(references, hypotheses), "n": len(references),
    }
