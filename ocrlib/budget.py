"""Fitting a run to a time budget: as many steps as this machine takes in the given seconds.

The same 2-core machine has run the ``laptop`` recipe's step in 0.16 s one day and 0.33 s
another (benchmarks/RESULTS.md), so a fixed number of steps either wastes half of the demo's 30
minutes or comes within a minute of overrunning them. With
:attr:`ocrlib.profiles.TrainConfig.budget` set, :func:`ocrlib.train.train` first times a few
steps of a throwaway copy of the run (:func:`step_seconds`), then trains for the number of steps
that fill the budget (:func:`fit_to_budget`). The schedule keeps its shape: the warm-up is a
fraction of the run already, and the alignment-guided start is scaled with it. Under
``torchrun`` every rank times its steps and all fit to their mean, so they agree. A resumed run
takes its number of steps from its checkpoint (:func:`resumed_fit`), so it ends where the
interrupted one would have (unless the clock ends it earlier, below).

The probe is only as good as the machine's speed staying what it saw: one run here was timed
at 0.137 s a step and then took 0.19 s a step for thousands of steps. So the training loop
checks the clock at every resume checkpoint (:func:`deadline_steps`, at the pace of the steps
since the check before last): when the steps left would take the run past its budget, it ends
earlier, and the rest of the learning-rate cycle and of the guided start's fade are squeezed
into the steps left (:meth:`ocrlib.session.OneCycle.squeeze`). A probe can be pessimistic too
(one here timed 0.206 s a step, and the steps then took 0.184 s): past a quarter of the run
(:data:`LENGTHEN_AFTER`), one that would end more than 5 % short of its budget at the slower
of its recent and its overall pace is lengthened the same way, by at most half
(:data:`MAX_STRETCH`), so the budget is spent, not left over.

When the training is one stage of a job with a deadline (``make demo``'s 30 minutes,
``ocrlib train --job-seconds``), :func:`job_budget` gives it what the job has left after a
reserve for the stages that follow, scaled to how long the stages before it took.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .profiles import TrainConfig

if TYPE_CHECKING:
    from .data import Batch
    from .session import Session

log = logging.getLogger(__name__)

#: the longest a budgeted run may be lengthened to, as a multiple of the steps it was fitted to
#: (its sampler is built for that many steps)
MAX_STRETCH = 1.5
#: a run is lengthened only once this share of it has run (its pace measured over that much)
LENGTHEN_AFTER = 0.25


#: What ``make demo``'s stages after training (the test set, the foreign sets, the typed words)
#: take as a share of its stages before it (the data): 0.8 on a 2-core EPYC with AVX512-BF16
#: (70 s before, about 55 after) and on a 2-core Zen 3 with AVX2 only (215 and 168 s): both slow
#: down with the machine alike (benchmarks/RESULTS.md, "make demo").
AFTER_SHARE = 0.8
#: A training run's wall-clock time beyond its budget (building, the probe, validation,
#: checkpoints) as a share of the budget: on the Zen 3, 1,574 s for a budget of 1,500, and
#: 1,373 s for 1,266 (8.5 %: the probe's steps are as many in a shorter budget).
TRAIN_OVERHEAD = 0.08
#: Seconds a whole job keeps in hand against the noise of its estimates.
JOB_MARGIN = 60.0
#: The least training :func:`job_budget` gives a job that has already used its time.
MIN_TRAINING = 60.0

#: Untimed steps :func:`step_seconds` takes before its timed ones in its second pass.
PROBE_WARMUP = 4
#: Steps in each of :func:`step_seconds`'s passes: :data:`PROBE_WARMUP` untimed, the rest
#: timed in the second.
PROBE_STEPS = 36
#: How far past its budget a run's projected end may go before :func:`deadline_steps` ends it
#: earlier. The probe's own error is about a tenth, so this also brings back a run whose probe
#: was optimistic; what it spares is the few seconds of noise between checks.
SLACK = 0.05


def fit_to_budget(cfg: TrainConfig, seconds_per_step: float) -> TrainConfig:
    """A copy of ``cfg`` whose ``steps`` fill ``cfg.budget`` seconds at ``seconds_per_step``.

    The steps are rounded down to a whole number of ``save_every`` where at least one fits (else
    they are the steps that fit, at least one: a ``save_every`` longer than the budget does not
    lengthen the run), and ``guided_steps`` is scaled by the same factor, so the guidance fades
    over the same share of the run. ``cfg`` without a budget comes back unchanged.

    Raises:
        ValueError: for a budget that is not positive, or a step time that is not a positive
            finite number.
    """
    if cfg.budget is None:
        return cfg
    if not cfg.budget > 0:
        raise ValueError(f"the time budget must be a positive number of seconds, got {cfg.budget}")
    _check_step_time(seconds_per_step)
    fits = int(cfg.budget / seconds_per_step)
    steps = _whole_saves(cfg.budget, seconds_per_step, cfg) if fits >= cfg.save_every else max(1, fits)
    guided = min(steps, round(cfg.guided_steps * steps / cfg.steps))
    return dataclasses.replace(cfg, steps=steps, guided_steps=guided)


def job_budget(whole: float, elapsed: float, cap: float, after_share: float = AFTER_SHARE,
               overhead: float = TRAIN_OVERHEAD, margin: float = JOB_MARGIN) -> float:
    """Seconds of training that let a whole job end within ``whole`` seconds of its start, when
    the stages before training took ``elapsed`` of them.

    A job like ``make demo`` prepares its data, trains, then evaluates, and only the training
    has a budget of its own. On a slower machine every stage is slower: there the data took
    3.6 minutes instead of 70 s and the evaluations 2.8 instead of about 1, and the demo ran
    past its 30 minutes with the training inside its 25. So training gets what is left once
    the stages after it (``after_share`` times ``elapsed``: they scale with the machine as the
    stages before did), its own time beyond its budget (``overhead``, a share of the budget)
    and a ``margin`` are set aside: ``(whole - margin - elapsed * (1 + after_share)) / (1 +
    overhead)``, at most ``cap`` (the run's own budget) and at least :data:`MIN_TRAINING` (or
    ``cap``, if smaller): a job already late still trains, and overruns. For the demo's 1,800 s
    after 215 s of data: 1,253 s; after 70 s: 1,494.

    Raises:
        ValueError: for a ``whole`` or ``cap`` that is not positive, or an ``elapsed`` that is
            negative, or any of them not finite.
    """
    for name, value in (("whole", whole), ("cap", cap)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value}")
    if not (math.isfinite(elapsed) and elapsed >= 0):
        raise ValueError(f"the seconds the job has used must be 0 or more, got {elapsed}")
    left = (whole - margin - elapsed * (1 + after_share)) / (1 + overhead)
    return max(min(cap, left), min(cap, MIN_TRAINING))


def budget_for_job(whole: float, started: float, cap: float, clock: Any = time.time) -> float:
    """:func:`job_budget` for a job that started at ``started`` (seconds since the epoch, as
    ``date +%s`` prints them; ``clock`` tells the time now), said in the log, with a warning
    when even the least training will make the job overrun.

    Raises:
        ValueError: for a start in the future, or what :func:`job_budget` refuses.
    """
    elapsed = clock() - started
    if elapsed < 0:
        raise ValueError(f"the job's start {started:.0f} is {-elapsed:.0f} s in the future (it "
                         "takes seconds since the epoch, as `date +%s` prints them)")
    budget = job_budget(whole, elapsed, cap)
    log.info("the job has used %.0f of its %.0f s before training and keeps about %.0f s for what "
             "follows: a training budget of %.0f s (at most %.0f)", elapsed, whole,
             AFTER_SHARE * elapsed, budget, cap)
    end = elapsed * (1 + AFTER_SHARE) + budget * (1 + TRAIN_OVERHEAD)
    if end > whole:
        log.warning("the job has too little time left: it will end about %.0f s after its %.0f s",
                    end - whole, whole)
    return budget


def step_seconds(session: Session, batches: Iterable[Batch], n: int = PROBE_STEPS - PROBE_WARMUP,
                 warmup: int = PROBE_WARMUP) -> float:
    """Mean wall-clock seconds of one training step (loading the batch, forward, backward,
    optimizer) over ``n`` steps, as the run takes them once it is under way.

    ``batches`` is iterated twice and must give the same batches each time (a DataLoader over
    a :class:`ocrlib.sampler.StepSampler` does). The first pass, ``warmup + n`` untimed steps,
    does what a run does only once: it compiles the kernels for these batches' widths and
    keeps their lines in memory (``cache_mb``). The second takes ``warmup`` untimed steps and
    times the next ``n``. Timed cold, the ``laptop`` run's step took 0.155 s against the
    0.115 s it then kept to for thousands of steps, and the run was planned a quarter short.

    ``session`` is a throwaway :class:`ocrlib.session.Session` (its weights change) and
    ``batches`` its training batches, from the first: they come in random order whatever
    their widths, so the mean over ``n`` of them is the run's mean to about a tenth
    (measured: benchmarks/RESULTS.md), if the machine keeps its speed.

    Raises:
        ValueError: if ``batches`` ends before ``warmup + n`` steps (in either pass).
    """
    _timed_pass(session, batches, warmup, n)  # the first pass warms; its time is not kept
    return _timed_pass(session, batches, warmup, n)


def _timed_pass(session: Session, batches: Iterable[Batch], warmup: int, n: int) -> float:
    """Seconds a step over steps ``warmup + 1 .. warmup + n`` of one pass over ``batches``.

    Raises:
        ValueError: if ``batches`` ends before ``warmup + n`` steps.
    """
    it = iter(batches)
    start = 0.0
    for k in range(warmup + n):
        if k == warmup:
            start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            raise ValueError(f"timing needs {warmup + n} batches, the run has {k}") from None
        session.step(batch)
    return (time.perf_counter() - start) / n


def resumed_fit(cfg: TrainConfig, saved: dict[str, Any]) -> TrainConfig:
    """``cfg`` with the steps and guided steps of the interrupted run whose resume checkpoint
    is ``saved``: as fitted to its budget, or the earlier end the clock set
    (:func:`deadline_steps`). Unchanged without a budget, or when the checkpoint does not say."""
    train = saved.get("train", {})
    if cfg.budget is None or "steps" not in train:
        return cfg
    log.info("resuming a budgeted run: %d steps, as it planned when it stopped", train["steps"])
    return dataclasses.replace(cfg, steps=int(train["steps"]),
                               guided_steps=int(train.get("guided_steps", cfg.guided_steps)))


def deadline_steps(cfg: TrainConfig, step: int, spent: float, seconds_per_step: float,
                   slack: float = SLACK, limit: int | None = None) -> int:
    """The step a budgeted run should end at, seen from ``step`` after ``spent`` seconds of
    training steps that lately took ``seconds_per_step`` each.

    ``cfg.steps`` while the steps left end the run within ``slack`` of ``cfg.budget`` (5 %
    either way). Past it, as many more steps as the budget has seconds left, rounded down to
    whole ``save_every``: earlier, but at least one ``save_every`` more, so the squeezed end
    of the schedule still has steps to run; or later (filling the budget less the slack), up
    to ``limit`` (the steps the run has batches for; None: never later), when the machine
    turned out faster than the probe said.
    ``cfg.steps`` for a run without a budget or already at its end.

    Raises:
        ValueError: for a step time that is not a positive finite number.
    """
    if cfg.budget is None or step >= cfg.steps:
        return cfg.steps
    _check_step_time(seconds_per_step)
    projected = spent + (cfg.steps - step) * seconds_per_step
    if projected > cfg.budget * (1 + slack):
        return min(cfg.steps, step + _whole_saves(cfg.budget - spent, seconds_per_step, cfg))
    if projected < cfg.budget * (1 - slack) and limit is not None:
        # to the slack's lower edge, not the budget: a pace 5 % slower later leaves it inside
        fits = step + _whole_saves(cfg.budget * (1 - slack) - spent, seconds_per_step, cfg)
        return max(cfg.steps, min(limit, fits))
    return cfg.steps


def _check_step_time(seconds_per_step: float) -> None:
    if not (math.isfinite(seconds_per_step) and seconds_per_step > 0):
        raise ValueError(f"seconds_per_step must be positive and finite, got {seconds_per_step}")


def _whole_saves(seconds: float, seconds_per_step: float, cfg: TrainConfig) -> int:
    """The steps that fit in ``seconds`` (none if negative) at ``seconds_per_step``, rounded
    down to whole ``cfg.save_every``, and at least one ``save_every``."""
    _check_step_time(seconds_per_step)
    unit = max(1, cfg.save_every)
    return max(unit, int(max(0.0, seconds) / seconds_per_step) // unit * unit)
