"""The character set and CTC tokenizer (notebook 01, "labels as integer sequences").

Index 0 is the CTC blank; the characters of the charset take indices 1..len(chars).
A label is encoded to a list of those indices and decoded back; decoding a CTC
frame sequence (collapse repeats, drop blanks) lives in :mod:`ocrlib.decoding`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BLANK = 0
DEFAULT_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase

#: Characters that can never be part of a charset: they separate fields and lines in labels.txt.
FORBIDDEN_CHARS = "\t\n\r"


class UnknownCharacterError(ValueError):
    """A label holds a character that the charset cannot encode."""


def ctc_min_length(label: Sequence[object]) -> int:
    """Smallest number of CTC frames that can emit ``label``.

    Each character needs one frame, and two equal adjacent characters need a blank
    frame between them, so ``T >= len(label) + number of adjacent repeats``.
    """
    repeats = sum(1 for a, b in zip(label, label[1:]) if a == b)
    return len(label) + repeats


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters with the CTC blank at index 0.

    Args:
        chars: the characters, in index order (index ``i`` of ``chars`` is class ``i + 1``).
    """

    chars: str = DEFAULT_CHARS
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a charset needs at least one character")
        dupes = sorted({c for c in self.chars if self.chars.count(c) > 1})
        if dupes:
            raise ValueError(f"charset has duplicate characters: {dupes!r}")
        bad = [c for c in self.chars if c in FORBIDDEN_CHARS]
        if bad:
            raise ValueError(f"charset may not contain tab or newline characters: {bad!r}")
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.chars)})

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs: the characters plus the blank."""
        return len(self.chars) + 1

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the charset, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        """Map a label to class indices (never the blank).

        Raises:
            UnknownCharacterError: naming the first unknown character and the label.
        """
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise UnknownCharacterError(
                f"character {err.args[0]!r} in label {text!r} is not in the charset"
            ) from None

    def decode(self, indices: Iterable[int]) -> str:
        """Map class indices back to text. Blanks are dropped; repeats are kept."""
        out = []
        for i in indices:
            i = int(i)
            if i == BLANK:
                continue
            if not 0 < i <= len(self.chars):
                raise ValueError(f"class index {i} is outside 0..{len(self.chars)}")
            out.append(self.chars[i - 1])
        return "".join(out)
