"""Turning CTC frame scores into text (notebook 05).

Greedy decoding takes the best class per frame, merges repeats and drops blanks: the
most probable *path*, which is not always the most probable *text* (many paths collapse
to the same text). Prefix beam search sums over those paths: for every candidate prefix
it keeps two probabilities, of the paths that end in a blank and of those that end in
the prefix's last character, because the next frame treats them differently (a repeated
character extends the text only after a blank).

Both decoders report the same confidence: the probability the model gives the decoded
text, ``P(text | image)``, summed over all its alignments by the CTC forward algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .charset import BLANK, Charset


@dataclass
class Decoded:
    """One decoded line.

    Attributes:
        text: the reading.
        confidence: ``P(text | image)`` under the model, in [0, 1].
        alternatives: the next-best readings from beam search with their probabilities,
            best first (empty for greedy decoding or ``top_n=1``).
    """

    text: str
    confidence: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """CTC's many-to-one map: merge runs of equal classes, then drop blanks."""
    out: list[int] = []
    prev = None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def labelling_log_prob(log_probs: torch.Tensor, labels: Sequence[Sequence[int]],
                       lengths: torch.Tensor | None = None) -> torch.Tensor:
    """``log P(labels[b] | x_b)``, summed over every alignment (CTC forward algorithm).

    A labelling that cannot fit in the frames (too long, or too many repeats) gets ``-inf``.

    Shape:
        log_probs: ``(B, T, V)`` log-softmax scores; labels: B class-index lists (no blanks);
        lengths: ``(B,)`` valid frames (default T). Returns ``(B,)`` float32 on the CPU.
    """
    B, T, _ = log_probs.shape
    if len(labels) != B:
        raise ValueError(f"{B} lines of scores but {len(labels)} labellings")
    if B == 0:
        return torch.zeros(0)
    lp = log_probs.detach().float().cpu().transpose(0, 1)  # (T, B, V)
    target_lengths = torch.tensor([len(x) for x in labels], dtype=torch.long)
    # padded (B, S) targets: the padding (class 1, never read) keeps S >= 1 for empty readings
    targets = torch.ones(B, max(1, int(target_lengths.max())), dtype=torch.long)
    for b, x in enumerate(labels):
        targets[b, : len(x)] = torch.as_tensor(list(x), dtype=torch.long)
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long)
    nll = F.ctc_loss(lp, targets, lengths.cpu().long(), target_lengths, blank=BLANK,
                     reduction="none", zero_infinity=False)
    return -nll


def _greedy_paths(log_probs: torch.Tensor, lengths: torch.Tensor | None) -> list[list[int]]:
    idx = log_probs.argmax(dim=-1)  # (B, T)
    B, T = idx.shape
    valid = torch.ones_like(idx, dtype=torch.bool)
    if lengths is not None:
        valid = torch.arange(T, device=idx.device)[None, :] < lengths.to(idx.device)[:, None]
    # keep frame t when it is not blank and differs from frame t-1
    keep = (idx != BLANK) & valid
    keep[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    idx, keep = idx.cpu(), keep.cpu()
    return [idx[b][keep[b]].tolist() for b in range(B)]


def greedy_decode(log_probs: torch.Tensor, charset: Charset,
                  lengths: torch.Tensor | None = None) -> list[Decoded]:
    """Best path per line (argmax per frame, merge repeats, drop blanks), vectorised.

    Shape:
        log_probs: ``(B, T, V)`` log-softmax scores; lengths: ``(B,)`` valid frames (default T).
    """
    labels = _greedy_paths(log_probs, lengths)
    conf = labelling_log_prob(log_probs, labels, lengths).exp()
    return [Decoded(charset.decode(lab), float(c)) for lab, c in zip(labels, conf)]


def beam_search(blank_probs: Sequence[float], candidates: Sequence[dict[int, float]],
                beam_width: int = 10, top_n: int = 1) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search over one line.

    Works on probabilities (not logs), rescaled after every frame so that the best prefix
    has probability 1; the scale is kept as a log, so nothing underflows on long lines.

    Args:
        blank_probs: the blank's probability in each of the ``T`` frames.
        candidates: per frame, ``{class: probability}`` for the non-blank classes that may
            extend (or repeat) a prefix there; :func:`frame_candidates` picks them. Classes
            left out count as probability 0 in that frame. Passing every non-blank class
            makes the search exact once ``beam_width`` covers every prefix.
        beam_width: prefixes kept after each frame.
        top_n: how many prefixes to return.

    Returns:
        Up to ``top_n`` ``(labelling, log probability)`` pairs, best first. The log
        probabilities sum only over the alignments the beam kept: lower bounds of the
        true ``log P(labelling | x)``.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    # Prefixes live in a trie: prefix id -> (parent id, last class); the root is id 0, the
    # empty prefix. Ids hash in O(1) where tuples of classes would hash in O(length).
    parent, last = [-1], [-1]
    child: dict[int, int] = {}
    n_classes = 1 + max((c for cands in candidates for c in cands), default=0)
    # prefix id -> [P(paths ending in blank), P(paths ending in the prefix's last class)]
    beams: dict[int, list[float]] = {0: [1.0, 0.0]}
    log_scale = 0.0
    for p_blank, cands in zip(blank_probs, candidates):
        nxt: dict[int, list[float]] = {}
        for pid, (pb, pnb) in beams.items():
            total = pb + pnb
            prev = last[pid]
            # the prefix stays: a blank frame, or its last class repeated (merged by CTC)
            repeat = pnb * cands.get(prev, 0.0)
            stay = nxt.get(pid)
            if stay is None:
                nxt[pid] = [total * p_blank, repeat]
            else:
                stay[0] += total * p_blank
                stay[1] += repeat
            for c, p in cands.items():
                # a repeat of the last class starts a new character only after a blank
                add = (pb if c == prev else total) * p
                key = pid * n_classes + c
                cid = child.get(key)
                if cid is None:
                    cid = child[key] = len(last)
                    parent.append(pid)
                    last.append(c)
                grown = nxt.get(cid)
                if grown is None:
                    nxt[cid] = [0.0, add]
                else:
                    grown[1] += add
        kept = sorted(nxt.items(), key=_beam_total, reverse=True)[:beam_width]
        best = max(v[0] + v[1] for _, v in kept)
        if best <= 0.0:  # every path has probability zero (a frame gave them all 0)
            beams = dict(kept)
            log_scale = -math.inf
            break
        inv = 1.0 / best
        beams = {pid: [v[0] * inv, v[1] * inv] for pid, v in kept}
        log_scale += math.log(best)

    def labelling(pid: int) -> tuple[int, ...]:
        out = []
        while pid > 0:
            out.append(last[pid])
            pid = parent[pid]
        return tuple(reversed(out))

    ranked = sorted(beams.items(), key=_beam_total, reverse=True)[:top_n]
    return [(labelling(pid), math.log(v[0] + v[1]) + log_scale if v[0] + v[1] > 0 else -math.inf)
            for pid, v in ranked]


def _beam_total(item: tuple[int, list[float]]) -> float:
    return item[1][0] + item[1][1]


def frame_candidates(log_probs: torch.Tensor, max_candidates: int, min_prob: float
                     ) -> tuple[list[list[float]], list[list[dict[int, float]]]]:
    """Per line and frame, the blank's probability and the classes worth trying.

    At most ``max_candidates`` non-blank classes per frame, the most probable first, and
    only those with probability at least ``min_prob``: on a trained model most frames are
    nearly all blank or one character, so this leaves zero to two candidates per frame.

    Shape:
        log_probs: ``(B, T, V)``. Returns ``blank[b][t]`` and ``candidates[b][t] = {class: p}``.
    """
    probs = log_probs.detach().double().exp()
    B, T, V = probs.shape
    blank = probs[..., BLANK].tolist()
    probs[..., BLANK] = -1.0  # never a candidate: blank is handled separately
    values, indices = probs.topk(min(max_candidates, V - 1), dim=-1)  # (B, T, k)
    b, t, j = (values >= min_prob).nonzero(as_tuple=True)
    cands: list[list[dict[int, float]]] = [[{} for _ in range(T)] for _ in range(B)]
    for bb, tt, c, p in zip(b.tolist(), t.tolist(), indices[b, t, j].tolist(), values[b, t, j].tolist()):
        cands[bb][tt][c] = p
    return blank, cands


def beam_search_batch(log_probs: torch.Tensor, charset: Charset, beam_width: int = 10,
                      top_n: int = 1, min_prob: float = 1e-3,
                      lengths: torch.Tensor | None = None) -> list[Decoded]:
    """Prefix beam search for every line of a batch.

    Characters below ``min_prob`` in a frame are not tried there (pruning; ``0`` tries
    every class). The result is never less probable than greedy decoding's: both readings
    are scored exactly with the CTC forward algorithm and the better one is kept (pruning
    can, rarely, lose the greedy reading from the beam).

    Shape:
        log_probs: ``(B, T, V)`` log-softmax scores; lengths: ``(B,)`` valid frames (default T).
    """
    B, T, _ = log_probs.shape
    if B == 0:
        return []
    lp = log_probs.detach().float().cpu()
    blank, cands = frame_candidates(lp, beam_width, min_prob)
    n_frames = lengths.tolist() if lengths is not None else [T] * B
    greedy = _greedy_paths(lp, lengths)
    # every line's candidates: the beam's top_n and the greedy reading, without repeats
    options: list[list[list[int]]] = []
    for b in range(B):
        found = beam_search(blank[b][: n_frames[b]], cands[b][: n_frames[b]], beam_width,
                            max(1, top_n))
        labs = [list(lab) for lab, _ in found]
        options.append(labs + ([greedy[b]] if greedy[b] not in labs else []))
    # score them all exactly (the beam's own scores only sum the alignments it kept)
    owner = torch.tensor([b for b, opts in enumerate(options) for _ in opts])
    flat = [lab for opts in options for lab in opts]
    exact = labelling_log_prob(lp[owner], flat, None if lengths is None else lengths[owner])
    out, k = [], 0
    for opts in options:
        ranked = sorted(zip(exact[k: k + len(opts)].tolist(), range(len(opts))), reverse=True)
        k += len(opts)
        readings = [(charset.decode(opts[i]), math.exp(score)) for score, i in ranked]
        out.append(Decoded(readings[0][0], readings[0][1], readings[1: max(1, top_n)]))
    return out


def decode(log_probs: torch.Tensor, charset: Charset, decoder: str = "greedy",
           beam_width: int = 10, top_n: int = 1, lengths: torch.Tensor | None = None
           ) -> list[Decoded]:
    """Decode ``(B, T, V)`` log-probabilities with ``"greedy"`` or ``"beam"``."""
    if decoder == "greedy":
        return greedy_decode(log_probs, charset, lengths)
    if decoder == "beam":
        return beam_search_batch(log_probs, charset, beam_width, top_n=top_n, lengths=lengths)
    raise ValueError(f"decoder must be greedy or beam, got {decoder!r}")
