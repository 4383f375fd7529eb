import pytest

from ocrlib.charset import BLANK, DEFAULT_CHARS, Charset, UnknownCharacterError, ctc_min_length


def test_default_charset_has_blank_at_zero_and_62_characters():
    cs = Charset()
    assert cs.chars == DEFAULT_CHARS
    assert len(cs) == 62 and cs.num_classes == 63
    assert BLANK == 0
    assert 0 not in cs.encode(DEFAULT_CHARS)
    assert cs.encode("0") == [1]
    assert cs.encode("Z") == [62]


@pytest.mark.parametrize("chars,text", [
    (DEFAULT_CHARS, "HR99abc"),
    (DEFAULT_CHARS + " .,:;!?'-", "Hello, world! It's 9:30 - ok."),
    ("ab", "abba"),
])
def test_round_trip(chars, text):
    cs = Charset(chars)
    assert cs.decode(cs.encode(text)) == text


def test_decode_drops_blanks_but_keeps_repeats():
    cs = Charset("ab")
    assert cs.decode([0, 1, 1, 0, 2, 0]) == "aab"
    with pytest.raises(ValueError, match="outside"):
        cs.decode([3])


def test_unknown_character_names_character_and_label():
    with pytest.raises(UnknownCharacterError) as err:
        Charset().encode("ab$cd")
    assert "'$'" in str(err.value) and "'ab$cd'" in str(err.value)
    assert Charset().unknown("a$b€$") == ["$", "€"]


@pytest.mark.parametrize("chars", ["", "abca", "ab\tc", "a\nb"])
def test_invalid_charsets_are_refused(chars):
    with pytest.raises(ValueError):
        Charset(chars)


@pytest.mark.parametrize("label,frames", [("", 0), ("abc", 3), ("aab", 4), ("HR99", 5), ("aaaa", 7)])
def test_ctc_min_length_counts_adjacent_repeats(label, frames):
    assert ctc_min_length(label) == frames
