"""Character and word error rates (notebook 05), computed with jiwer.

CER = (substitutions + deletions + insertions) / reference characters. It is unbounded
above: a hypothesis with many insertions can score CER > 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import jiwer


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level character error rate: total edits over total reference characters."""
    _check(references, hypotheses)
    if not references:
        return 0.0
    return float(jiwer.cer(list(references), list(hypotheses)))


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level word error rate (words split on whitespace)."""
    _check(references, hypotheses)
    if not references:
        return 0.0
    return float(jiwer.wer(list(references), list(hypotheses)))


def accuracy(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Fraction of lines read exactly."""
    _check(references, hypotheses)
    return sum(r == h for r, h in zip(references, hypotheses)) / max(1, len(references))


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
