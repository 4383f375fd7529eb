"""The strings the generator draws: random mixed text from a charset, or lines of a file.

:data:`TEXT_KINDS` mixes what real lines hold (lower-case runs, capitals, capitalised words,
numbers, codes that mix letters and digits) with uniformly random strings, so every character
is seen in every neighbourhood while the model also meets the patterns it will read.
"""

from __future__ import annotations

import os
import string
from typing import TYPE_CHECKING

import numpy as np

from .charset import Charset

if TYPE_CHECKING:
    from .synth import SynthConfig


def read_text_lines(path: str | os.PathLike[str], charset: Charset) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file, every character checked.

    Raises:
        ValueError: naming the file, line number and character of the first unknown character.
        FileNotFoundError: when the file is missing.
    """
    lines = []
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            bad = charset.unknown(line)
            if bad:
                raise ValueError(
                    f"{path}:{no}: character {bad[0]!r} in {line!r} is not in the charset"
                )
            lines.append(line)
    if not lines:
        raise ValueError(f"{path}: no non-empty lines")
    return lines


TEXT_KINDS = (  # (name, weight, alphabet; None: the whole charset)
    ("random", 0.40, None),
    ("lower", 0.15, string.ascii_lowercase),
    ("upper", 0.10, string.ascii_uppercase),
    ("capitalised", 0.10, "Aa"),
    ("digits", 0.10, string.digits),
    ("letters+digits", 0.15, "a1"),
)


def random_text(rng: np.random.Generator, cfg: SynthConfig) -> str:
    """A random string of ``min_len..max_len`` characters from ``cfg.chars``.

    With ``cfg.text == "mixed"`` the string is of one of :data:`TEXT_KINDS`, as far as the
    charset allows (a digits-only charset always gives uniformly random digits).
    """
    visible = [c for c in cfg.chars if c != " "]
    n = int(rng.integers(cfg.min_len, cfg.max_len + 1))
    chars = [visible[j] for j in rng.integers(0, len(visible), size=n)]
    if cfg.text == "mixed":
        weights = np.array([w for _, w, _ in TEXT_KINDS])
        kind, _, alphabet = TEXT_KINDS[int(rng.choice(len(TEXT_KINDS), p=weights / weights.sum()))]
        chars = _kind_text(rng, kind, alphabet, visible, n) or chars
    if " " in cfg.chars and n >= 3:
        # a space between words with probability 0.15 per gap; never at an end or doubled
        for k in range(1, n - 1):
            if rng.random() < 0.15 and chars[k - 1] != " ":
                chars[k] = " "
    return "".join(chars)


def _kind_text(rng: np.random.Generator, kind: str, alphabet: str | None, visible: list[str],
               n: int) -> list[str] | None:
    """``n`` characters of one kind, or None when the charset lacks what the kind needs."""
    def pick(pool: str, k: int) -> list[str]:
        have = [c for c in pool if c in visible]
        return [have[j] for j in rng.integers(0, len(have), size=k)] if have and k > 0 else []

    lower, upper, digits = string.ascii_lowercase, string.ascii_uppercase, string.digits
    if kind == "capitalised":
        out = pick(upper, 1) + pick(lower, n - 1)
    elif kind == "letters+digits":
        k = int(rng.integers(1, n)) if n > 1 else 1
        letters = pick(upper if rng.random() < 0.5 else lower, k)
        out = letters + pick(digits, n - k)
        if rng.random() < 0.3:
            out = out[k:] + out[:k]  # digits first
    elif alphabet is None:
        return None
    else:
        out = pick(alphabet, n)
    return out if len(out) == n else None
