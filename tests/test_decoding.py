import itertools
import math

import pytest
import torch

from ocrlib.charset import Charset
from ocrlib.decoding import (beam_search, beam_search_batch, collapse, decode, frame_candidates,
                             greedy_decode, labelling_log_prob)

ABC = Charset("abc")  # classes: 0 blank, 1 a, 2 b, 3 c


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """P(labelling) for every labelling, by summing every one of the V^T paths."""
    probs = log_probs.double().exp()
    T, V = probs.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.prod(float(probs[t, c]) for t, c in enumerate(path))
        key = tuple(collapse(path))
        out[key] = out.get(key, 0.0) + p
    return out


def frames(*rows: list[float]) -> torch.Tensor:
    """(1, T, V) log-probabilities from rows of probabilities."""
    return torch.tensor([rows], dtype=torch.float64).log()


def test_collapse_merges_repeats_and_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0, 3]) == [1, 1, 2, 3]
    assert collapse([0, 0, 0]) == []


@pytest.mark.parametrize("path, text", [
    ([0, 0, 0, 0], ""),                # all blank
    ([1, 1, 1, 1], "a"),               # a run is one character
    ([1, 0, 1, 0], "aa"),              # a blank separates a repeat
    ([1, 2, 1, 2], "abab"),
    ([0, 3, 3, 0], "c"),
])
def test_greedy_edge_cases(path, text):
    lp = torch.full((1, len(path), 4), -9.0)
    lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(lp.log_softmax(-1), ABC)[0].text == text


def test_greedy_respects_lengths_and_batches():
    path = [1, 0, 2, 0, 3, 0]
    lp = torch.full((2, 6, 4), -9.0)
    lp[:, torch.arange(6), torch.tensor(path)] = 0.0
    out = greedy_decode(lp.log_softmax(-1), ABC, lengths=torch.tensor([6, 3]))
    assert [d.text for d in out] == ["abc", "ab"]


def test_labelling_probability_matches_brute_force():
    torch.manual_seed(0)
    lp = torch.randn(1, 4, 3, dtype=torch.float64).log_softmax(-1)
    exact = brute_force(lp[0])
    labels = list(exact)
    got = labelling_log_prob(lp.expand(len(labels), -1, -1), labels).double().exp()
    for lab, p in zip(labels, got.tolist()):
        assert p == pytest.approx(exact[lab], rel=1e-5, abs=1e-7)
    assert sum(exact.values()) == pytest.approx(1.0)
    # a labelling that cannot fit: 'aaa' needs 5 frames, there are 4
    assert labelling_log_prob(lp, [[1, 1, 1]]).item() == -math.inf


@pytest.mark.parametrize("seed", range(8))
def test_wide_unpruned_beam_finds_the_exact_best_labelling(seed):
    g = torch.Generator().manual_seed(seed)
    T, V = 5, 3
    lp = (torch.randn(T, V, generator=g, dtype=torch.float64) * 1.5).log_softmax(-1)
    exact = brute_force(lp)
    blank, cands = frame_candidates(lp[None], max_candidates=V, min_prob=0.0)
    found = beam_search(blank[0], cands[0], beam_width=len(exact), top_n=len(exact))
    ranking = sorted(exact, key=exact.get, reverse=True)
    assert found[0][0] == ranking[0]
    # with a beam that never prunes, every score is the exact sum over alignments
    for lab, logp in found:
        assert math.exp(logp) == pytest.approx(exact[lab], rel=1e-9)
    assert [lab for lab, _ in found] == ranking


@pytest.mark.parametrize("seed", range(20))
def test_default_beam_is_never_less_probable_than_greedy(seed):
    g = torch.Generator().manual_seed(100 + seed)
    lp = (torch.randn(3, 12, 5, generator=g) * 2).log_softmax(-1)
    cs = Charset("abcd")
    greedy, beam = greedy_decode(lp, cs), beam_search_batch(lp, cs, beam_width=3)
    for gd, bd in zip(greedy, beam):
        assert bd.confidence >= gd.confidence * (1 - 1e-5)
    # the confidences are exact labelling probabilities
    exact = labelling_log_prob(lp, [cs.encode(d.text) for d in beam]).exp()
    assert torch.allclose(exact, torch.tensor([d.confidence for d in beam]), rtol=1e-5)


def test_beam_beats_greedy_where_paths_add_up():
    # two frames, 'a' at 0.4 in each: greedy reads blank-blank (0.36) -> "";
    # but "a" has aa + a_ + _a = 0.16 + 0.24 + 0.24 = 0.64
    lp = frames([0.6, 0.4, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0]).clamp_min(-1e4)
    g, b = greedy_decode(lp, ABC)[0], beam_search_batch(lp, ABC, beam_width=4)[0]
    assert (g.text, b.text) == ("", "a")
    assert g.confidence == pytest.approx(0.36, rel=1e-4)
    assert b.confidence == pytest.approx(0.64, rel=1e-4)


def test_repeats_need_a_blank_between_them():
    # a, blank, a is "aa"; a, a is "a" — beam search keeps both readings apart
    lp = frames([0.05, 0.9, 0.05], [0.8, 0.1, 0.1], [0.05, 0.9, 0.05]).clamp_min(-1e4)
    ab = Charset("ab")
    exact = brute_force(lp[0])
    out = beam_search_batch(lp, ab, beam_width=8, top_n=3, min_prob=0.0)[0]
    assert out.text == "aa" and out.confidence == pytest.approx(exact[(1, 1)], rel=1e-5)
    alts = dict(out.alternatives)
    assert alts["a"] == pytest.approx(exact[(1,)], rel=1e-5)
    assert list(alts) == sorted(alts, key=alts.get, reverse=True) and "aa" not in alts


def test_alternatives_are_distinct_and_ordered():
    torch.manual_seed(3)
    lp = torch.randn(4, 10, 4).log_softmax(-1)
    for d in beam_search_batch(lp, ABC, beam_width=10, top_n=5):
        texts = [d.text] + [t for t, _ in d.alternatives]
        assert len(texts) == len(set(texts)) and len(d.alternatives) <= 4
        probs = [p for _, p in d.alternatives]
        assert probs == sorted(probs, reverse=True) and all(p <= d.confidence + 1e-6 for p in probs)


def test_beam_handles_lengths_empty_output_and_bad_arguments():
    lp = torch.full((2, 6, 4), -9.0)
    lp[:, :, 0] = 0.0
    lp[0, 4, 0], lp[0, 4, 2] = -9.0, 0.0  # 'b' in frame 4 of line 0 only
    out = beam_search_batch(lp.log_softmax(-1), ABC, lengths=torch.tensor([6, 3]))
    assert [d.text for d in out] == ["b", ""]
    out = beam_search_batch(lp.log_softmax(-1), ABC, lengths=torch.tensor([4, 6]))
    assert out[0].text == ""  # frame 4 is past the end
    empty = torch.zeros(0, 6, 4)
    assert beam_search_batch(empty, ABC) == [] and greedy_decode(empty, ABC) == []
    with pytest.raises(ValueError, match="beam_width"):
        beam_search([1.0], [{}], beam_width=0)
    with pytest.raises(ValueError, match="greedy or beam"):
        decode(lp, ABC, decoder="viterbi")


def test_beam_on_long_lines_does_not_underflow():
    # 400 frames of near-uniform scores: path probabilities far below float's range
    torch.manual_seed(0)
    lp = (torch.randn(1, 400, 4) * 0.1).log_softmax(-1)
    d = beam_search_batch(lp, ABC, beam_width=5)[0]
    exact = labelling_log_prob(lp, [ABC.encode(d.text)])
    assert torch.isfinite(exact).all() and len(d.text) > 0
