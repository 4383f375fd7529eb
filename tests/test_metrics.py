import math

import pytest

from ocrlib.metrics import (Edit, accuracy, align, cer, edit_distance, error_counts,
                            normalized_edit_distance, sample_cer, scores, wer)


def test_cer_is_corpus_level_edits_over_reference_characters():
    # 1 deletion in 'hello' (5 chars) + 1 substitution in 'abc' (3 chars) = 2/8
    assert cer(["hello", "abc"], ["helo", "abd"]) == pytest.approx(0.25)
    # not the mean of per-line rates (0.2 and 0.333)
    assert cer(["hello", "abc"], ["helo", "abd"]) != pytest.approx((0.2 + 1 / 3) / 2)
    assert cer(["ab"], ["ab"]) == 0.0


def test_cer_is_unbounded_but_normalised_distance_is_not():
    assert cer(["ab"], ["xyzw"]) == pytest.approx(2.0)
    assert normalized_edit_distance(["ab"], ["xyzw"]) == pytest.approx(1.0)
    assert normalized_edit_distance(["abc", "abc"], ["abc", "abcdef"]) == pytest.approx(0.25)


def test_wer_and_accuracy():
    assert wer(["a b", "c"], ["a x", "c"]) == pytest.approx(1 / 3)
    assert wer(["one", "two", "six"], ["one", "tw0", "six"]) == pytest.approx(1 - 2 / 3)
    assert accuracy(["a", "b", "c", "d"], ["a", "b", "x", ""]) == 0.5


def test_case_insensitive_variants():
    refs, hyps = ["Hello", "ABC"], ["hello", "abd"]
    assert cer(refs, hyps) == pytest.approx(4 / 8)  # H-h, A-a, B-b, C-d
    assert cer(refs, hyps, ignore_case=True) == pytest.approx(1 / 8)
    assert accuracy(refs, hyps, ignore_case=True) == 0.5
    assert wer(["Big Cat"], ["big cat"], ignore_case=True) == 0.0


def test_empty_strings_and_mismatched_lengths():
    assert cer([], []) == 0.0 and accuracy([], []) == 0.0
    assert cer([""], [""]) == 0.0 and cer([""], ["a"]) == math.inf
    assert sample_cer("", "") == 0.0 and sample_cer("", "x") == math.inf
    assert cer(["", "ab"], ["x", "ab"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        cer(["a", "b"], ["a"])


def test_alignment_names_every_edit():
    assert align("hello", "helo") == [
        Edit("equal", "h", "h", 0, 0), Edit("equal", "e", "e", 1, 1), Edit("equal", "l", "l", 2, 2),
        Edit("delete", "l", "", 3, 3), Edit("equal", "o", "o", 4, 3)]
    assert [e.kind for e in align("ab", "xab")] == ["insert", "equal", "equal"]
    assert [(e.kind, e.ref, e.hyp) for e in align("8O", "80")] == [("equal", "8", "8"), ("substitute", "O", "0")]
    assert align("", "") == []
    assert edit_distance("kitten", "sitting") == 3


def test_error_counts_gather_substitutions_insertions_deletions():
    counts = error_counts(["hello", "abc", "O0", "ab"], ["helo", "abd", "00", "abb"])
    assert counts == {("delete", "l", ""): 1, ("substitute", "c", "d"): 1,
                      ("substitute", "O", "0"): 1, ("insert", "", "b"): 1}


def test_scores_bundle():
    s = scores(["ab", "cd"], ["ab", "cx"])
    assert s == {"cer": 0.25, "wer": 0.5, "accuracy": 0.5, "cer_ci": 0.25, "ned": 0.25, "n": 2}
