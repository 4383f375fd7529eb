import copy
import dataclasses
import time

import pytest
import torch

from ocrlib import train as T
from ocrlib.budget import (
    AFTER_SHARE, JOB_MARGIN, MIN_TRAINING, TRAIN_OVERHEAD, budget_for_job, deadline_steps,
    fit_to_budget, job_budget, step_seconds,
)
from ocrlib.checkpoint import read_checkpoint
from ocrlib.session import OneCycle, Session, build_scheduler
from ocrlib.synth import generate_splits
from ocrlib.train import TrainConfig, loaders, profiles, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_splits(root, {"train": 24, "val": 8}, seed=0, cfg=profiles()["tiny"].synth,
                    workers=1, progress=False)
    return root


def _micro(**kw):
    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    prof.train = TrainConfig(batch_size=4, lr=1e-3, eval_every=3, save_every=3, val_limit=8,
                             amp="off", device="cpu", **kw)
    return prof


def test_the_steps_that_fit_fill_the_budget_and_the_guidance_keeps_its_share():
    cfg = TrainConfig(steps=5000, guided_steps=5000, save_every=250, budget=1140.0)
    fast, slow = fit_to_budget(cfg, 0.16), fit_to_budget(cfg, 0.32)
    assert (fast.steps, fast.guided_steps) == (7000, 7000)  # 7125 rounded down to 250s
    assert (slow.steps, slow.guided_steps) == (3500, 3500)
    assert fast.budget == 1140.0 and cfg.steps == 5000  # a copy
    part = fit_to_budget(TrainConfig(steps=20000, guided_steps=2000, save_every=500,
                                     budget=3000.0), 0.1)
    assert (part.steps, part.guided_steps) == (30000, 3000)
    # fewer steps fit than one save_every: the steps that fit (at least one), not a save's
    # worth: 250 steps of 100 s would have taken 25,000 s of a 1,140 s budget
    assert (fit_to_budget(cfg, 100.0).steps, fit_to_budget(cfg, 100.0).guided_steps) == (11, 11)
    assert fit_to_budget(cfg, 5000.0).steps == 1
    assert fit_to_budget(dataclasses.replace(cfg, save_every=10**6), 0.16).steps == 7125
    plain = TrainConfig(steps=123)
    assert fit_to_budget(plain, 0.5) is plain
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds_per_step"):
            fit_to_budget(cfg, bad)
    with pytest.raises(ValueError, match="positive number of seconds"):
        fit_to_budget(TrainConfig(budget=-5.0), 0.1)


def test_timing_steps_takes_real_steps_and_says_when_batches_run_out(data):
    prof = _micro(steps=40)
    run = Session(prof.model, prof.train)
    before = [p.detach().clone() for p in run.params]
    batches, _, _ = loaders(prof.model, prof.train, data / "train", data / "val", 0)
    seconds = step_seconds(run, batches, n=3, warmup=1)
    assert 0 < seconds < 10 and run.state.step == 8  # two passes of 4
    assert any(not torch.equal(a, b) for a, b in zip(before, run.params))
    with pytest.raises(ValueError, match="timing needs 36 batches, the run has 5"):
        step_seconds(run, iter(list(batches)[:5]))


def test_timing_steps_times_them_warm_kernels_compiled_and_lines_kept():
    class Run:  # a step is slow the first time it meets a batch (kernels, loading), then fast
        def __init__(self) -> None:
            self.seen: list[int] = []

        def step(self, batch: int) -> None:
            time.sleep(0.002 if batch in self.seen else 0.05)
            self.seen.append(batch)

    run = Run()
    seconds = step_seconds(run, range(100), n=6, warmup=2)  # type: ignore[arg-type]
    # both passes take the same batches from the first; only the second pass's last 6 are timed
    assert run.seen == list(range(8)) * 2
    assert seconds < 0.02
    with pytest.raises(ValueError, match="timing needs 8 batches, the run has 5"):
        step_seconds(run, range(5), n=6, warmup=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timing needs 8 batches, the run has 0"):
        step_seconds(run, iter(range(8)), n=6, warmup=2)  # type: ignore[arg-type]


def test_a_budgeted_run_trains_what_fits_as_a_plain_run_would_and_resumes(data, tmp_path,
                                                                           monkeypatch):
    real = step_seconds
    timed = []
    # the probe takes its real steps, but says each took 0.5 s: a 6 s budget fits 12 steps
    monkeypatch.setattr(T, "step_seconds", lambda s, b: (timed.append(real(s, b)), 0.5)[1])
    ticks = iter(range(10**6))  # and the steps keep to it: no earlier or later end
    monkeypatch.setattr(T, "_clock", lambda: 0.5 * next(ticks))
    budgeted = _micro(steps=6, guided_steps=6, budget=6.0)
    res = train(budgeted.model, budgeted.train, data / "train", data / "val",
                tmp_path / "a" / "best_m.pth", progress=False)
    assert len(timed) == 1 and res.step == 12
    saved = read_checkpoint(res.last)["train"]
    assert (saved["steps"], saved["guided_steps"], saved["budget"]) == (12, 12, 6.0)
    plain = _micro(steps=12, guided_steps=12)
    ref = train(plain.model, plain.train, data / "train", data / "val",
                tmp_path / "b" / "best_m.pth", progress=False)
    a, b = read_checkpoint(res.last)["model"], read_checkpoint(ref.last)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the throwaway probe changed nothing
    # killed half way and resumed: the steps come from the checkpoint, not a new timing
    part = train(budgeted.model, budgeted.train, data / "train", data / "val",
                 tmp_path / "c" / "best_m.pth", progress=False, stop_after=6)
    monkeypatch.setattr(T, "step_seconds", lambda s, b: pytest.fail("timed again on resume"))
    resumed = train(budgeted.model, budgeted.train, data / "train", data / "val",
                    tmp_path / "c" / "best_m.pth", progress=False, resume=True)
    assert part.step == 6 and resumed.step == 12
    c = read_checkpoint(resumed.last)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)


class _Stop(Exception):
    pass


def test_the_laptop_profile_fits_its_training_to_a_budget_and_the_cli_can_say_otherwise(
        data, monkeypatch):
    from ocrlib import cli

    laptop = profiles()["laptop"].train
    assert laptop.budget is not None
    seen = []

    def stand_in(prof, *args, **kwargs):
        seen.append(prof.train)
        raise _Stop

    monkeypatch.setattr(T, "train_profile", stand_in)
    for argv, budget, steps in (([], laptop.budget, laptop.steps),
                                (["--steps", "300"], None, 300),
                                (["--budget", "60"], 60.0, laptop.steps),
                                (["--budget", "0"], None, laptop.steps)):
        with pytest.raises(_Stop):
            cli.main(["train", "--train", str(data / "train"), "--val", str(data / "val"), *argv])
        assert (seen[-1].budget, seen[-1].steps) == (budget, steps), argv


def test_a_job_with_a_deadline_trains_for_what_the_stages_around_training_leave():
    # make demo on the Zen 3: 215 s of data, then training, then evaluations that take about
    # 0.8 as long as the data did: the training's time and all the rest end the job in time
    budget = job_budget(1800, 215, 1500)
    assert budget == pytest.approx((1800 - JOB_MARGIN - 215 * (1 + AFTER_SHARE)) / (1 + TRAIN_OVERHEAD))
    assert 1200 < budget < 1300
    assert 215 + budget * (1 + TRAIN_OVERHEAD) + 215 * AFTER_SHARE == pytest.approx(1800 - JOB_MARGIN)
    assert job_budget(1800, 40, 1500) == 1500  # quick data: the run's own budget
    assert job_budget(1800, 215, 600) == 600
    shares = [job_budget(1800, t, 1500) for t in (0, 100, 200, 400, 800)]
    assert shares[0] == 1500 and all(a > b for a, b in zip(shares, shares[1:]))
    assert job_budget(1800, 5000, 1500) == MIN_TRAINING  # late already: the least training
    assert job_budget(1800, 5000, 30) == 30  # never above the run's own budget
    for bad in ((0, 10, 1500), (1800, -1, 1500), (1800, 10, 0), (float("nan"), 10, 1500),
                (1800, float("inf"), 1500)):
        with pytest.raises(ValueError):
            job_budget(*bad)


def test_a_job_budget_reads_the_clock_says_what_it_gave_and_warns_when_late(caplog):
    caplog.set_level("INFO", logger="ocrlib")
    assert budget_for_job(1800, 1000.0, 1500, clock=lambda: 1215.0) == job_budget(1800, 215, 1500)
    assert "used 215 of its 1800 s" in caplog.text and "WARNING" not in caplog.text
    caplog.clear()
    assert budget_for_job(1800, 1000.0, 1500, clock=lambda: 2100.0) == MIN_TRAINING
    assert "it will end about" in caplog.text and caplog.records[-1].levelname == "WARNING"
    with pytest.raises(ValueError, match="in the future"):
        budget_for_job(1800, 1000.0, 1500, clock=lambda: 900.0)


def test_the_cli_fits_a_run_to_its_jobs_deadline_and_refuses_what_cannot_go_together(
        data, monkeypatch, capsys):
    from ocrlib import cli

    laptop = profiles()["laptop"].train
    seen = []

    def stand_in(prof, *args, **kwargs):
        seen.append(prof.train)
        raise _Stop

    monkeypatch.setattr(T, "train_profile", stand_in)
    base = ["train", "--train", str(data / "train"), "--val", str(data / "val")]
    started = time.time() - 215
    for extra, cap in (([], laptop.budget), (["--budget", "600"], 600.0)):
        with pytest.raises(_Stop):
            cli.main([*base, "--job-seconds", "1800", "--job-started", str(started), *extra])
        # the clock moves on between the two readings: two seconds at most
        assert min(job_budget(1800, 217, cap), cap) - 1e-6 <= seen[-1].budget <= job_budget(1800, 215, cap)
    assert seen[0].budget < laptop.budget and seen[1].budget == 600.0
    for extra, message in ((["--job-seconds", "1800"], "go together"),
                           (["--job-started", str(started)], "go together"),
                           (["--job-seconds", "1800", "--job-started", str(started), "--steps",
                             "300"], "cannot go with --steps"),
                           (["--job-seconds", "1800", "--job-started", str(started), "--resume"],
                            "resume without it"),
                           (["--job-seconds", "1800", "--job-started", str(time.time() + 100)],
                            "in the future")):
        assert cli.main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert len(seen) == 2


def test_resuming_a_budgeted_run_that_never_started_says_what_is_missing(data, tmp_path):
    prof = _micro(steps=6, budget=6.0)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint at"):
        train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
              progress=False, resume=True)


def test_a_run_behind_the_clock_ends_earlier_one_ahead_later_and_one_on_time_alike():
    cfg = TrainConfig(steps=8000, save_every=250, budget=1200.0)
    # on time: 1,000 s spent at step 7,000 of 8,000 at 0.15 s a step is 1,150 s in all
    assert deadline_steps(cfg, 7000, 1000.0, 0.15) == 8000
    # within the slack (5 %): 1,250 s projected
    assert deadline_steps(cfg, 5000, 770.0, 0.16) == 8000
    # behind: 800 s at step 4,000, 0.19 s a step -> 1,560 s; 400 s left buy 2,105 steps -> 2,000
    assert deadline_steps(cfg, 4000, 800.0, 0.19) == 6000
    # already past the budget: one more save's worth to anneal in
    assert deadline_steps(cfg, 7500, 1300.0, 0.2) == 7750
    assert deadline_steps(TrainConfig(steps=100), 10, 1e9, 1.0) == 100  # no budget, no end
    assert deadline_steps(cfg, 8000, 1e9, 1.0) == 8000  # already at the end
    # ahead: 240 s at step 2,000, 0.12 s a step -> 960 s; the 900 s left to the slack's lower
    # edge (1,140 s) buy 7,500 more steps, as far as the run has batches (limit), and never
    # later without a limit
    assert deadline_steps(cfg, 2000, 240.0, 0.12, limit=12000) == 9500
    assert deadline_steps(cfg, 2000, 240.0, 0.12, limit=9000) == 9000
    assert deadline_steps(cfg, 2000, 240.0, 0.12) == 8000
    # within the slack below (1,150 s projected, at least 1,140): unchanged
    assert deadline_steps(cfg, 7000, 1000.0, 0.15, limit=12000) == 8000
    with pytest.raises(ValueError, match="seconds_per_step"):
        deadline_steps(cfg, 100, 10.0, 0.0)


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append((sched.get_last_lr()[0], sched.optimizer.param_groups[0]["betas"][0]))
        sched.optimizer.step()
        sched.step()
    return out


def _adamw():
    return torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)


def test_the_one_cycle_is_torchs_until_squeezed_and_then_anneals_fully_in_the_steps_left():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup=0.1)
    ours = build_scheduler(_adamw(), cfg)
    ref = torch.optim.lr_scheduler.OneCycleLR(_adamw(), max_lr=1e-3, total_steps=100,
                                              pct_start=0.1)
    assert isinstance(ours, OneCycle) and _lrs(ours, 100) == _lrs(ref, 100)
    plain = _lrs(build_scheduler(_adamw(), cfg), 100)
    sched = build_scheduler(_adamw(), cfg)
    before = _lrs(sched, 40)
    sched.squeeze(40, 70)  # the last 60 steps' cycle in 30
    after = _lrs(sched, 30)
    assert before == plain[:40]
    assert after[0] == pytest.approx(plain[40], rel=1e-9)  # no jump where it was squeezed:
    # the next step is 59/29 of a step further on the cycle, at 42.03
    assert plain[42][0] > after[1][0] > plain[43][0]
    lrs = [lr for lr, _ in after]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # annealing all the way down...
    assert lrs[-1] == pytest.approx(plain[-1][0], rel=1e-6)  # ...to where the full cycle ends
    assert after[-1][1] == pytest.approx(plain[-1][1])  # and the momentum cycles with it
    # the squeeze is part of the state: a scheduler built for the new end and loaded from it
    # goes on alike (as a resumed run does)
    state = sched.state_dict()
    resumed = build_scheduler(_adamw(), TrainConfig(steps=70, lr=1e-3, warmup=0.1))
    resumed.load_state_dict(state)
    assert resumed.squeezed == (40, 40.0, 70) and resumed.total_steps == 100
    with pytest.raises(ValueError, match="cannot squeeze"):
        sched.squeeze(70, 70)


def test_a_budgeted_run_that_falls_behind_ends_early_annealed_and_resumes_alike(
        data, tmp_path, monkeypatch):
    # the probe says 0.1 s a step: a 6 s budget fits 60 steps. The clock then says every step
    # takes 0.25 s. At the first check after the untimed first 4 steps (step 6), 1.5 s are
    # spent and the 54 steps left would take 13.5 s: the 4.5 s left buy 18 more, so the run
    # ends at step 24
    monkeypatch.setattr(T, "step_seconds", lambda s, b: 0.1)
    ticks = iter(range(10**6))
    monkeypatch.setattr(T, "_clock", lambda: 0.25 * next(ticks))
    prof = _micro(steps=6, guided_steps=6, budget=6.0)
    res = train(prof.model, prof.train, data / "train", data / "val",
                tmp_path / "a" / "best_m.pth", progress=False)
    assert res.step == 24 and res.history[-1]["step"] == 24
    last = read_checkpoint(res.last)
    assert last["train"]["steps"] == 24 and last["train_seconds"] == 6.0
    assert last["scheduler"]["squeezed"] == (6, 6.0, 24)
    # its learning rate ended where a full 60-step cycle ends
    plain = build_scheduler(_adamw(), dataclasses.replace(prof.train, steps=60))
    _lrs(plain, 60)
    assert res.history[-1]["lr"] == pytest.approx(plain.get_last_lr()[0], rel=1e-6)
    # killed after the squeeze and resumed: it keeps the squeezed schedule and the seconds
    # spent, and ends alike
    ticks2 = iter(range(10**6))
    monkeypatch.setattr(T, "_clock", lambda: 0.25 * next(ticks2))
    part = train(prof.model, prof.train, data / "train", data / "val",
                 tmp_path / "b" / "best_m.pth", progress=False, stop_after=9)
    assert read_checkpoint(part.last)["train_seconds"] == 2.25
    monkeypatch.setattr(T, "step_seconds", lambda s, b: pytest.fail("timed again on resume"))
    resumed = train(prof.model, prof.train, data / "train", data / "val",
                    tmp_path / "b" / "best_m.pth", progress=False, resume=True)
    assert resumed.step == 24
    again = read_checkpoint(resumed.last)
    assert again["train_seconds"] == 6.0
    assert all(torch.equal(last["model"][k], again["model"][k]) for k in last["model"])


def test_a_resume_checkpoint_from_before_the_clock_was_kept_assumes_the_fitted_pace(tmp_path):
    from ocrlib.checkpoint import save_checkpoint

    prof = _micro(steps=60, budget=6.0)
    run = Session(prof.model, prof.train)
    run.state.step = 15
    old = run.checkpoint(for_resume=True)
    assert old.pop("train_seconds") == 0.0
    save_checkpoint(tmp_path / "last.pth", old)
    again = Session(prof.model, prof.train)
    again.resume(tmp_path / "last.pth")
    assert again.state.step == 15 and again.state.seconds == pytest.approx(1.5)  # 15 x 6 s / 60


def test_a_budgeted_run_ahead_of_the_clock_is_lengthened_up_to_its_limit(data, tmp_path,
                                                                          monkeypatch, caplog):
    # the probe says 0.25 s a step: a 6 s budget fits 24 steps, and the run has batches for
    # 36 (MAX_STRETCH). The clock then says 0.1 s a step: at step 6, 0.6 s spent, the 18
    # steps left would end it at 2.4 s; the 5.1 s left to 5.7 buy 51 more steps, so it is lengthened
    # to its limit, step 36, and the rest of its cycle stretched over them (a quarter of the
    # 24 steps has run by step 6, so it may be lengthened there)
    monkeypatch.setattr(T, "step_seconds", lambda s, b: 0.25)
    ticks = iter(range(10**6))
    monkeypatch.setattr(T, "_clock", lambda: 0.1 * next(ticks))
    prof = _micro(steps=6, guided_steps=6, budget=6.0)
    with caplog.at_level("INFO", logger="ocrlib"):
        res = train(prof.model, prof.train, data / "train", data / "val",
                    tmp_path / "best_m.pth", progress=False)
    assert "ahead of the clock" in caplog.text and "ends at step 36 instead of 24" in caplog.text
    assert res.step == 36 and res.history[-1]["step"] == 36
    last = read_checkpoint(res.last)
    assert last["train"]["steps"] == 36 and last["train_seconds"] == pytest.approx(3.6)
    assert last["scheduler"]["squeezed"] == (6, 6.0, 36)
    plain = build_scheduler(_adamw(), dataclasses.replace(prof.train, steps=24))
    _lrs(plain, 24)  # it still ends annealed, where the 24-step cycle ends
    assert res.history[-1]["lr"] == pytest.approx(plain.get_last_lr()[0], rel=1e-6)


def _count_steps(monkeypatch):
    """A list whose first item counts the training steps taken (for a stand-in clock)."""
    taken = [0]
    real_step = Session.step

    def counted(self, batch):
        taken[0] += 1
        return real_step(self, batch)

    monkeypatch.setattr(Session, "step", counted)
    return taken


def test_one_slow_window_does_not_shorten_a_run_on_time(data, tmp_path, monkeypatch, caplog):
    # 48 steps fit (0.125 s a step, 6 s), and the steps keep to that but for steps 10-12, 10 %
    # slower. At the check at step 12 that window alone would project 6.49 s, past the
    # slack's 6.3; the pace since the check before last (step 6) projects 6.26: the run
    # keeps its end, and nothing else moves it
    monkeypatch.setattr(T, "step_seconds", lambda s, b: 0.125)
    taken = _count_steps(monkeypatch)
    monkeypatch.setattr(T, "_clock",
                        lambda: 0.125 * taken[0] + 0.0125 * min(3, max(0, taken[0] - 9)))
    prof = _micro(steps=6, budget=6.0)
    with caplog.at_level("INFO", logger="ocrlib"):
        res = train(prof.model, prof.train, data / "train", data / "val",
                    tmp_path / "best_m.pth", progress=False)
    assert res.step == 48 and "the clock" not in caplog.text


def test_a_run_is_lengthened_only_past_a_quarter_and_at_its_slower_pace(data, tmp_path,
                                                                        monkeypatch, caplog):
    # the probe says 0.125 s a step: 48 steps fit in 6 s. Steps 1-9 keep to that, then each
    # takes 0.01 s. At step 12, a quarter through, the last window's pace (0.01) would
    # lengthen it to its limit (72), and so would the pace since the check before last
    # (0.068); the pace since the first timed step (0.082) buys 54 more steps: step 66.
    # Before step 12 nothing may lengthen it, whatever the pace.
    monkeypatch.setattr(T, "step_seconds", lambda s, b: 0.125)
    taken = _count_steps(monkeypatch)
    monkeypatch.setattr(T, "_clock", lambda: 0.125 * min(taken[0], 9) + 0.01 * max(0, taken[0] - 9))
    prof = _micro(steps=6, budget=6.0)
    with caplog.at_level("INFO", logger="ocrlib"):
        res = train(prof.model, prof.train, data / "train", data / "val",
                    tmp_path / "best_m.pth", progress=False)
    first = [r.getMessage() for r in caplog.records if "the clock" in r.getMessage()][0]
    assert "spent at step 12" in first and "ends at step 66 instead of 48" in first
    assert res.step == 72  # and, the pace holding, to its limit at a later check
