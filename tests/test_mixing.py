"""Training from several sources at once, mixed by ratio (``ocrlib.sampler.MixSampler``)."""

import logging
import re
import shutil
from collections import Counter

import pytest

from ddp_worker import micro
from ocrlib.checkpoint import CheckpointMismatchError, read_checkpoint
from ocrlib.sampler import MixSampler, split_counts
from ocrlib.sources import Sources
from ocrlib.synth import generate_splits
from ocrlib.train import train


def test_split_counts_follow_the_ratios_and_sum_to_the_total():
    assert split_counts(32, [0.7, 0.3]) == [22, 10]
    assert split_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(split_counts(1024, [0.5, 0.25, 0.2, 0.05])) == 1024


def _source(i, offsets=(0, 100)):
    return 0 if i < offsets[1] else 1


def test_every_chunk_takes_its_share_from_each_source():
    widths = [(i * 37) % 50 for i in range(130)]  # source 0: 100 lines, source 1: 30
    s = MixSampler([100, 30], [0.7, 0.3], batch_size=8, seed=1, start=0, total=40,
                   widths=widths, bucket=5)
    batches = list(s)
    assert len(batches) == 40 and all(len(b) == 8 for b in batches)
    for c in range(0, 40, 5):
        chunk = [i for b in batches[c:c + 5] for i in b]
        assert Counter(_source(i) for i in chunk) == {0: 28, 1: 12}
    # bucketed: a batch holds neighbouring widths of its chunk
    chunk = sorted(i for b in batches[:5] for i in b)
    spans = [max(widths[i] for i in b) - min(widths[i] for i in b) for b in batches[:5]]
    assert sum(spans) <= max(widths[i] for i in chunk) - min(widths[i] for i in chunk)


def test_the_small_source_repeats_each_of_its_lines_equally_often():
    s = MixSampler([100, 30], [0.5, 0.5], batch_size=6, seed=0, start=0, total=50, bucket=1)
    seen = Counter(i for b in s for i in b if i >= 100)
    assert len(seen) == 30 and set(seen.values()) == {5}  # 150 draws: five full passes


def test_the_mix_is_a_function_of_the_seed_and_step_so_resuming_is_exact():
    widths = list(range(130))
    whole = list(MixSampler([100, 30], [0.7, 0.3], 8, seed=2, start=0, total=30, widths=widths,
                            bucket=4))
    tail = list(MixSampler([100, 30], [0.7, 0.3], 8, seed=2, start=13, total=30, widths=widths,
                           bucket=4))
    assert tail == whole[13:]
    other = list(MixSampler([100, 30], [0.7, 0.3], 8, seed=3, start=0, total=30, widths=widths,
                            bucket=4))
    assert other != whole


@pytest.mark.parametrize("sizes, ratios, match", [
    ([100, 30], [0.7], "one non-negative mixing ratio per source"),
    ([100, 30], [0.0, 0.0], "not all zero"),
    ([100, 30], [1.0, -0.1], "non-negative"),
    ([100, 0], [0.5, 0.5], "has no lines"),
    ([100, 30], [0.999, 0.001], "gives that source no line"),
])
def test_bad_mixes_are_refused_with_the_reason(sizes, ratios, match):
    with pytest.raises(ValueError, match=match):
        MixSampler(sizes, ratios, batch_size=4, seed=0, start=0, total=3, bucket=2)


def test_training_mixes_two_sources_and_says_how(tmp_path, caplog):
    prof = micro(steps=3)
    generate_splits(tmp_path / "a", {"train": 24, "val": 8}, seed=0, cfg=prof.synth, workers=1,
                    progress=False)
    generate_splits(tmp_path / "b", {"train": 8}, seed=1, cfg=prof.synth, workers=1, progress=False)
    sources = [tmp_path / "a" / "train", tmp_path / "b" / "train"]
    with pytest.raises(ValueError, match="2 mixing ratios for 1 training sources"):
        train(prof.model, prof.train, sources[0], tmp_path / "a" / "val", tmp_path / "x.pth",
              progress=False, mix=[0.5, 0.5])
    with caplog.at_level(logging.INFO, logger="ocrlib"):
        res = train(prof.model, prof.train, sources, tmp_path / "a" / "val",
                    tmp_path / "best_m.pth", progress=False, mix=[0.75, 0.25])
    assert res.step == 3 and read_checkpoint(res.last)["step"] == 3
    assert f"mixing {sources[1]}: 25% of every batch, 8 lines" in caplog.text


def test_a_run_resumes_only_on_the_sources_and_shares_it_was_trained_on(tmp_path, caplog):
    prof = micro(steps=6)
    generate_splits(tmp_path / "a", {"train": 24, "val": 8}, seed=0, cfg=prof.synth, workers=1,
                    progress=False)
    generate_splits(tmp_path / "b", {"train": 8}, seed=1, cfg=prof.synth, workers=1, progress=False)
    a, b, val, out = tmp_path / "a" / "train", tmp_path / "b" / "train", tmp_path / "a" / "val", \
        tmp_path / "run" / "best_m.pth"

    def run(sources, mix, **kw):
        return train(prof.model, prof.train, sources, val, out, progress=False, mix=mix, **kw)

    part = run([a, b], [0.75, 0.25], stop_after=3)
    saved = read_checkpoint(part.last)
    assert Sources.from_dict(saved["data"]) == Sources((a.as_posix(), b.as_posix()), (24, 8),
                                                       (0.75, 0.25))
    before = part.last.read_bytes()
    resume_with = f"--train {a.as_posix()} {b.as_posix()} --mix 0.75 0.25"
    for sources, mix in [([a], None), ([a, b], [0.5, 0.5]), ([b, a], [0.25, 0.75]), ([a, a], None)]:
        with pytest.raises(CheckpointMismatchError, match="Resume with `" + re.escape(resume_with)):
            run(sources, mix, resume=True)
    assert part.last.read_bytes() == before  # a refused resume leaves the checkpoint alone

    moved = tmp_path / "moved"
    shutil.copytree(b, moved)
    with caplog.at_level(logging.WARNING, logger="ocrlib"):
        res = run([a, moved], [0.75, 0.25], resume=True)
    assert res.step == 6
    assert f"which it was trained on as {a.as_posix()} + {b.as_posix()}" in caplog.text
