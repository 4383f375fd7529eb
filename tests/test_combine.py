"""One reading from a line's views: the 'mean' (mixture) and 'surest' rules."""

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ocrlib.charset import Charset
from ocrlib.combine import View, Way, combine, mixture_log_probs
from ocrlib.decoding import Decoded, labelling_log_prob

AB = Charset("ab")


def _frames(*rows: tuple[float, float, float]) -> torch.Tensor:
    """(T, 3) log-probabilities (blank, a, b) from per-frame probabilities."""
    return torch.tensor(rows).log()


def test_the_mixture_is_the_mean_probability_over_the_views():
    torch.manual_seed(0)
    views = [torch.randn(t, 3).log_softmax(-1) for t in (4, 6, 2)]
    labels = [[1], [1, 2], [2, 1, 2], []]
    got = mixture_log_probs(views, labels)
    for c, lab in enumerate(labels):
        each = [math.exp(float(labelling_log_prob(v[None], [lab])[0])) for v in views]
        assert math.exp(float(got[c])) == pytest.approx(sum(each) / 3, rel=1e-5)
    # 'aba' needs 3 frames: impossible in the 2-frame view, which adds nothing to its mean
    short = math.exp(float(labelling_log_prob(views[2][None], [[2, 1, 2]])[0]))
    assert short == 0.0
    with pytest.raises(ValueError, match="at least one view"):
        mixture_log_probs([], labels)


def test_mean_prefers_the_reading_most_views_find_likely_and_surest_the_surest_view():
    # one view is sure of "ab"; two others are fairly sure of "ba" and find "ab" unlikely
    sure = View(Decoded("ab", 0.95 * 0.95), _frames((0.0001, 0.95, 0.05), (0.0001, 0.05, 0.95)))
    fair = [View(Decoded("ba", 0.64), _frames((0.0001, 0.2, 0.8), (0.0001, 0.8, 0.2)),
                 Way(pad=0.15), flipped=k == 1) for k in range(2)]
    views = [sure, *fair]
    assert combine(views, "surest", AB).reading.text == "ab"
    best = combine(views, "mean", AB, top_n=2)
    p_ba = (0.05 * 0.05 + 0.64 + 0.64) / 3
    p_ab = (0.95 * 0.95 + 0.04 + 0.04) / 3
    assert best.reading.text == "ba"
    assert best.reading.confidence == pytest.approx(p_ba, rel=1e-3)
    assert best.reading.alternatives == [("ab", pytest.approx(p_ab, rel=1e-3))]
    assert best.way == Way(pad=0.15) and not best.flipped  # carried by the first surest of "ba"
    assert combine(views, "mean", AB).reading.alternatives == []
    # one view: its own reading under either rule
    assert combine([sure], "mean", AB).reading == sure.reading
    with pytest.raises(ValueError, match="combine must be one of"):
        combine(views, "vote", AB)
    with pytest.raises(ValueError, match="log-probabilities"):
        combine([sure, View(Decoded("b", 0.5))], "mean", AB)


def _views_by_hand(rec, img: Image.Image) -> list[torch.Tensor]:
    """The (T, V) log-probabilities of every way ``rec`` reads ``img`` (flip_unsure off)."""
    from ocrlib.normalize import colour_view

    out, view = [], colour_view(img)
    for way in rec.ways():
        im = way.image(img, view)
        if im is not None:
            batch = rec.prepare([im])
            out.append(rec.log_probs(batch.images)[0, : int(batch.frames[0])])
    return out


def test_read_keeps_the_reading_with_the_highest_mean_probability(trained):
    from ocrlib.inference import Recognizer

    root, ckpt = trained
    rec = Recognizer.from_checkpoint(ckpt, flip_unsure=False)
    assert rec.combine == "mean"
    images = [Image.open(p).convert("RGB") for p in sorted((root / "data/val/images").glob("*.png"))]
    for img in images:
        got = rec.read([img])[0]  # one at a time: no padding from a wider neighbour
        views = _views_by_hand(rec, img)
        assert len(views) >= 3  # as given and two stretches at least
        own = [rec.decode(v[None])[0].text for v in views]
        texts = sorted({*own, got.text})
        scores = mixture_log_probs(views, [rec.model.charset.encode(t) for t in texts])
        mine = dict(zip(texts, scores.exp().tolist()))
        assert got.text in own
        assert got.confidence == pytest.approx(mine[got.text], rel=1e-4)
        assert all(p <= got.confidence * (1 + 1e-4) for p in mine.values())


def test_evaluate_reads_as_read_does_under_either_rule(trained):
    from ocrlib.inference import Recognizer

    root, ckpt = trained
    paths = sorted((root / "data/val/images").glob("*.png"))
    for rule in ("mean", "surest"):
        rec = Recognizer.from_checkpoint(ckpt, combine=rule)
        # one line a batch in both: a wider neighbour's padding changes a line's last frames
        r = rec.evaluate(root / "data/val", batch_size=1)
        by_path = dict(zip(r["paths"], zip(r["predictions"], r["confidences"])))
        for p in paths:
            d = rec.read([Image.open(p)])[0]
            text, conf = by_path[str(p)]
            assert d.text == text and d.confidence == pytest.approx(conf, rel=1e-4)


def test_the_command_line_takes_the_rule(trained):
    from ocrlib.inference import Recognizer

    root, ckpt = trained
    args = [sys.executable, "-m", "ocrlib", "eval", "--data", str(root / "data/val"),
            "--checkpoint", str(ckpt), "--json"]
    proc = subprocess.run(args + ["--combine", "surest"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    want = Recognizer.from_checkpoint(ckpt, combine="surest").evaluate(root / "data/val")["cer"]
    assert json.loads(proc.stdout)["cer"] == pytest.approx(want)
    bad = subprocess.run(args + ["--combine", "vote"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--combine" in bad.stderr
    with pytest.raises(ValueError, match="combine must be one of"):
        Recognizer.from_checkpoint(ckpt, combine="vote")
