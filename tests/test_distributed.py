"""Distributed training on the CPU: torchrun, gloo, two processes (``ocrlib.distributed``)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddp_worker import micro
from ocrlib.checkpoint import load_model, read_checkpoint
from ocrlib.data import OCRDataset, ctc_collate
from ocrlib.distributed import Dist, ShardSampler, check_batch
from ocrlib.sampler import StepSampler
from ocrlib.synth import generate_splits
from ocrlib.train import last_path, train

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args, timeout=120, env=None, nproc=2):
    """Run ``torchrun --standalone --nproc_per_node N`` on ``args``; returns the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    generate_splits(root, {"train": 32, "val": 8}, seed=0, cfg=micro().synth, workers=1,
                    progress=False)
    return root


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    """An uninterrupted 2-rank run of the micro model, 6 steps."""
    out = tmp_path_factory.mktemp("ddp_whole")
    ok(torchrun(WORKER, data, out, "--check-batchnorm"))
    return out / "best_m.pth"


def _weights(path):
    return read_checkpoint(path)["model"]


def test_each_rank_reads_its_interleaved_share_of_the_same_global_batches():
    widths = [i % 7 for i in range(40)]
    whole = list(StepSampler(40, 8, seed=3, start=0, total=12, widths=widths, bucket=2))
    shares = [list(ShardSampler(StepSampler(40, 8, 3, 0, 12, widths, 2), Dist(r, 2), widths))
              for r in range(2)]
    for step, batch in enumerate(whole):
        keys = [[i for i, _ in share[step]] for share in shares]
        assert sorted(keys[0] + keys[1]) == sorted(batch)
        assert keys[0] == batch[0::2] and keys[1] == batch[1::2]
        # every share is padded as wide as the whole batch
        assert {w for share in shares for _, w in share[step]} == {max(widths[i] for i in batch)}
    with pytest.raises(ValueError, match="multiple of 3"):
        check_batch(8, Dist(0, 3))


def test_gloo_batchnorm_is_batchnorm_over_the_whole_batch(two_ranks):
    for rank in (0, 1):
        diffs = json.loads(two_ranks.with_name(f"bn_rank{rank}.json").read_text())
        assert max(diffs.values()) < 1e-4, diffs


def test_two_ranks_train_the_weights_one_process_trains(data, two_ranks, tmp_path, monkeypatch):
    from ddp_worker import keep_first_gradients

    from ocrlib import session

    monkeypatch.setattr(session.Session, "step", session.Session.step)  # undone after the test
    keep_first_gradients(session.Session, tmp_path / "first_gradients.pt")
    prof = micro()
    one = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
                progress=False)
    # the first step: DDP's averaged gradients are one process's on the whole batch (shares
    # padded alike, BatchNorm over the global batch, the guided term over the global batch)
    g1 = torch.load(tmp_path / "first_gradients.pt")
    g2 = torch.load(two_ranks.with_name("first_gradients.pt"))
    for k in g1:
        assert (g2[k] - g1[k]).norm() <= 1e-3 * g1[k].norm() + 1e-12, k
    # six steps: the runs differ by float rounding only, which Adam amplifies in the weights
    # whose gradients are rounding noise (each moves by ±lr whatever the noise's size), so
    # compare what the models compute: their log-probabilities on the validation lines. Here,
    # 0.2 % apart (one process on one thread and on two: 0.16 %)
    m1, m2 = load_model(one.last)[0], load_model(two_ranks.with_name("last_m.pth"))[0]
    cfg = m1.cfg
    val = OCRDataset(data / "val", m1.charset, cfg.height, cfg.width, cfg.time_steps,
                     normalize=cfg.normalize)
    images = ctc_collate([val[i] for i in range(len(val))]).images
    with torch.no_grad():
        out1, out2 = m1(images).log_softmax(-1), m2(images).log_softmax(-1)
    assert (out2 - out1).norm() < 0.01 * out1.norm()
    hist_one = [json.loads(x) for x in (tmp_path / "best_m_history.jsonl").read_text().splitlines()]
    hist_two = [json.loads(x) for x in two_ranks.with_name("best_m_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist_two] == [h["step"] for h in hist_one] == [3, 6]
    for a, b in zip(hist_one, hist_two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    # a checkpoint written by two ranks loads in one process
    model, ckpt = load_model(two_ranks)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len(read_checkpoint(two_ranks.with_name("last_m.pth"))["rng_ranks"]) == 2


def test_a_killed_and_resumed_two_rank_run_ends_where_the_whole_one_does(data, two_ranks, tmp_path):
    ok(torchrun(WORKER, data, tmp_path, "--stop-after", 3))
    assert read_checkpoint(tmp_path / "last_m.pth")["step"] == 3
    ok(torchrun(WORKER, data, tmp_path, "--resume"))
    a, b = _weights(two_ranks.with_name("last_m.pth")), _weights(tmp_path / "last_m.pth")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_ranks_resume_what_one_process_started(data, two_ranks, tmp_path):
    prof = micro()
    part = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
                 progress=False, stop_after=3)
    assert "rng_ranks" not in read_checkpoint(part.last)
    proc = ok(torchrun(WORKER, data, tmp_path, "--resume"))
    assert "written by 1 process(es), this run has 2" in proc.stderr
    assert read_checkpoint(tmp_path / "last_m.pth")["step"] == 6


def test_a_hung_rank_ends_the_job_with_a_message_instead_of_hanging(data, tmp_path):
    t0 = time.perf_counter()
    proc = torchrun(WORKER, data, tmp_path, "--hang-at", 2,
                    env={"OCRLIB_DIST_TIMEOUT": "5"}, timeout=100)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 90
    assert "rank 0 of 2 failed: another rank did not answer within 5 s" in proc.stderr, \
        proc.stderr[-3000:]


def test_ocrlib_train_runs_unchanged_under_torchrun(data, tmp_path):
    # two sources mixed half and half, as a learner adds their own lines to synthetic ones;
    # theirs come without the renderer's alignment, so in some steps one rank's share has it
    # and the other's not: the ranks must still agree on the guided term's collectives
    generate_splits(tmp_path / "own", {"train": 8}, seed=5, cfg=micro().synth, workers=1,
                    progress=False)
    (tmp_path / "own" / "train" / "meta.jsonl").unlink()
    out = tmp_path / "best.pth"
    proc = ok(torchrun("-m", "ocrlib", "train", "--profile", "tiny", "--steps", "2",
                       "--batch-size", "4", "--train", data / "train", tmp_path / "own" / "train",
                       "--mix", "0.5", "0.5", "--val", data / "val", "--out", out, "--quiet"))
    assert proc.stdout.count("trained 2 steps") == 1  # rank 0 reports; the others are quiet
    assert proc.stderr.count("% of every batch") == 2  # rank 0 says how it mixes, once a source
    assert read_checkpoint(last_path(out))["step"] == 2
    assert load_model(out)[0].charset.chars == micro().model.charset.chars


def test_ranks_fit_the_same_number_of_steps_to_a_time_budget(data, tmp_path):
    out = tmp_path / "best.pth"
    proc = ok(torchrun("-m", "ocrlib", "-v", "train", "--profile", "tiny", "--budget", "1",
                       "--batch-size", "4", "--train", data / "train", "--val", data / "val",
                       "--out", out, "--quiet"))
    fitted = re.findall(r"(\d+) steps fit in the budget of 1 s", proc.stderr)
    # -v: every rank logs what it fitted; a rank that fitted more steps would wait for the
    # others' gradients after they had finished, and the job would fail instead
    assert len(fitted) == 2 and fitted[0] == fitted[1], proc.stderr[-3000:]
    ckpt = read_checkpoint(last_path(out))
    # (the steps may end earlier than fitted, where the clock says so: alike on every rank,
    # or the job would have failed)
    assert ckpt["step"] == ckpt["train"]["steps"] <= int(fitted[0])
