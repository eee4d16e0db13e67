"""Optuna studies on a journal file: counts, resume after a failure, stale trials, divergence,
and stacked trials against one-by-one trials."""

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from kdflow.distillation import DistillSetup
from kdflow.engine import TrainConfig, fit, predict_logits, scratch_objective
from kdflow.methods import METHODS
from kdflow.models import build_model
from kdflow.tracking import TrackingSpec
from kdflow.trials import TrialContext, sequential_trainer, stacked_trainer
from kdflow.tuning import (
    KD_SPACE,
    IncompleteStudyError,
    PrunerConfig,
    Range,
    best_params,
    check_complete,
    claim_lock,
    claim_trials,
    open_study,
    run_study,
    trials_frame,
)

PRUNER = PrunerConfig(n_startup_trials=2, n_warmup_steps=1)
OFF = TrackingSpec(False, "", "x", "")


@pytest.fixture(scope="module")
def ctx(small_splits):
    train, val = small_splits
    torch.manual_seed(0)
    teacher = build_model({"family": "cnn1d", "channels": 16, "layers": 2}, (40,), 10)
    teacher = fit(teacher, train, val, TrainConfig(epochs=4, batch_size=64), scratch_objective()).model
    spec, kd = {"family": "mlp", "hidden": [16]}, METHODS["kd"]
    setup = DistillSetup.build(kd, kd.resolve(), spec, (40,), 10, None, train, predict_logits(teacher, train))
    return TrialContext(
        setup, {"logit_std": False}, None, train, val, TrainConfig(epochs=4, batch_size=64),
        OFF, {}, None, "tune/kd/t__s", "j",
    )  # fmt: skip


def counting(trainer, calls):
    def train_batch(trials, params):
        calls.extend(t.number for t in trials)
        return trainer(trials, params)

    return train_batch


def finished(study):
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.parametrize("batch", [1, 4])
def test_study_reaches_trial_count_within_the_search_space(ctx, tmp_path, batch):
    calls = []
    trainer = stacked_trainer(ctx) if batch > 1 else sequential_trainer(ctx)
    space = {"temperature": Range(2.0, 8.0, log=True), "alpha": Range(0.1, 0.9)}
    study = run_study(tmp_path / "s.journal", "e", space, 6, 0, PRUNER, counting(trainer, calls), batch)
    assert len(finished(study)) == 6 and len(calls) == 6
    for t in finished(study):
        assert 2.0 <= t.params["temperature"] <= 8.0 and 0.1 <= t.params["alpha"] <= 0.9
    best = best_params(study)
    assert best["val_acc"] == max(t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))
    frame = trials_frame(study)
    assert len(frame) == 6 and set(frame.state) <= {"COMPLETE", "PRUNED"}


def test_stacked_trials_give_the_values_of_one_by_one_trials(ctx, tmp_path):
    no_prune = PrunerConfig(n_startup_trials=100, n_warmup_steps=100)
    one = run_study(tmp_path / "a.journal", "e", KD_SPACE, 4, 0, no_prune, sequential_trainer(ctx), 1)
    params = [dict(t.params) for t in one.trials]
    # Replay the same (T, alpha) as one stacked batch.
    study = open_study(tmp_path / "b.journal", "e", 0, no_prune)
    trials = [study.ask() for _ in params]
    for t, p in zip(trials, params):
        t.suggest_float("temperature", p["temperature"], p["temperature"])
        t.suggest_float("alpha", p["alpha"], p["alpha"])
    values = stacked_trainer(ctx)(trials, params)
    for t, v in zip(one.trials, values):
        assert v == pytest.approx(t.value, abs=0.0051)  # one validation sample in 200


def test_rerun_continues_an_interrupted_study(ctx, tmp_path):
    journal = tmp_path / "s.journal"
    calls = []
    trainer = sequential_trainer(ctx)

    def dies_on_third(trials, params):
        if trials[0].number == 2:
            raise KeyboardInterrupt  # the job is killed during trial 2
        return counting(trainer, calls)(trials, params)

    with pytest.raises(KeyboardInterrupt):
        run_study(journal, "e", KD_SPACE, 5, 0, PRUNER, dies_on_third)
    assert calls == [0, 1]
    study = run_study(journal, "e", KD_SPACE, 5, 0, PRUNER, counting(trainer, calls))
    assert study.trials[2].state == TrialState.FAIL  # the interrupted trial is failed, not counted
    assert len(finished(study)) == 5
    assert calls == [0, 1, 3, 4, 5]  # finished trials were not redone
    assert study.trials[3].params == study.trials[2].params  # the killed point is retried first
    points = [tuple(t.params.values()) for t in finished(study)]
    assert len(set(points)) == 5  # and no new trial repeats an earlier point


def test_trials_left_running_by_a_killed_worker_are_failed_on_restart(ctx, tmp_path):
    journal = tmp_path / "s.journal"
    study = open_study(journal, "e", 0, PRUNER)
    study.ask()  # trials that a SIGKILLed batch left RUNNING
    study.ask()
    study = run_study(journal, "e", KD_SPACE, 2, 0, PRUNER, stacked_trainer(ctx), 2)
    assert [t.state for t in study.trials[:2]] == [TrialState.FAIL, TrialState.FAIL]
    assert len(finished(study)) == 2


@pytest.mark.parametrize("batch", [1, 3])
def test_diverging_trial_is_pruned_with_its_reason(ctx, tmp_path, batch):
    bad = TrialContext(
        **{**ctx.__dict__, "cfg": TrainConfig(epochs=3, batch_size=64, lr=1e9, optimizer="sgd")}
    )
    trainer = stacked_trainer(bad) if batch > 1 else sequential_trainer(bad)
    study = run_study(tmp_path / "s.journal", "e", KD_SPACE, 3, 0, PRUNER, trainer, batch)
    for t in study.trials:
        assert t.state == TrialState.PRUNED
        assert "at epoch 1" in t.user_attrs["pruned_reason"]
    assert all("at epoch 1" in r for r in trials_frame(study).pruned_reason)


def test_garbled_journal_names_the_file(tmp_path):
    journal = tmp_path / "s.journal"
    journal.write_text('{"op_code": 0, "worker_id": "x", "study_name": "e"\nnot json at all\n')
    with pytest.raises(RuntimeError, match="s.journal"):
        open_study(journal, "e", 0, PRUNER)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ----------------------------------------------------------------------------- several workers
# Real worker processes on one journal. Their objective is a cheap function of (T, alpha), so the
# test exercises what several workers add (claims, ownership, stale trials), not training.


def _quick_batch(hang_file: str | None = None):
    import time

    def train_batch(trials, params):
        if hang_file:  # a worker stuck in its trials until the test SIGKILLs it
            Path(hang_file).write_text("in trial")
            time.sleep(600)
        out = []
        for t, p in zip(trials, params):
            temp, alpha = p["temperature"], p["alpha"]
            for step in range(3):
                t.report(alpha * step, step)
            time.sleep(0.1)
            out.append(alpha / temp)
        return out

    return train_batch


def _worker(journal, n_trials, worker, n_workers, barrier=None, hang_file=None):
    if barrier is not None:
        barrier.wait()  # start together, after the imports
    run_study(
        Path(journal), "e", KD_SPACE, n_trials, 0, PRUNER, _quick_batch(hang_file), 2,
        worker=worker, n_workers=n_workers,
    )  # fmt: skip


def _spawn(target, *args):
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    return proc


def test_workers_share_a_study_and_end_with_exactly_its_trial_count(tmp_path):
    import multiprocessing as mp

    journal = tmp_path / "s.journal"
    open_study(journal, "e", 0, PRUNER)  # created up front, as the pipeline's tune_start does
    barrier = mp.get_context("spawn").Barrier(3)
    procs = [_spawn(_worker, str(journal), 13, w, 3, barrier) for w in range(3)]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    study = open_study(journal, "e", 0, PRUNER)
    check_complete(study, 13, journal)
    assert len(study.trials) == 13  # none asked beyond the count, none failed
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1, 2}  # all three took part
    points = {(t.params["temperature"], t.params["alpha"]) for t in study.trials}
    assert len(points) == 13  # no two workers drew the same point


def test_a_killed_worker_fails_only_its_own_trials_and_the_study_ends_exact(tmp_path):
    import os
    import signal
    import time

    journal, hang = tmp_path / "s.journal", tmp_path / "hang"
    open_study(journal, "e", 0, PRUNER)
    stuck = _spawn(_worker, str(journal), 10, 1, 2, None, str(hang))
    deadline = time.monotonic() + 60
    while not hang.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hang.exists(), "worker 1 never reached its trials"
    other = _spawn(_worker, str(journal), 10, 0, 2)  # runs while worker 1 holds two RUNNING trials
    other.join(120)
    assert other.exitcode == 0
    os.kill(stuck.pid, signal.SIGKILL)  # a worker killed mid-trial (OOM, preemption)
    stuck.join(10)

    study = open_study(journal, "e", 0, PRUNER)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert [t.user_attrs["worker"] for t in running] == [1, 1]  # worker 0 left them alone
    assert len(finished(study)) == 8  # worker 0 filled the rest, and no more
    with pytest.raises(IncompleteStudyError, match=r"8 finished trials of 10, 2 still RUNNING"):
        check_complete(study, 10, journal)

    restarted = _spawn(_worker, str(journal), 10, 1, 2)  # the rerun of worker 1's job
    restarted.join(120)
    assert restarted.exitcode == 0
    study = open_study(journal, "e", 0, PRUNER)
    check_complete(study, 10, journal)
    check_complete(study, 6, journal)  # a later, smaller n_trials: the study's 10 trials all count
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [t.number for t in running]
    retries = {t.user_attrs["retry_of"]: t.params for t in finished(study) if "retry_of" in t.user_attrs}
    assert retries == {t.number: t.params for t in running}  # the killed points were retried


def test_a_restarted_worker_leaves_other_workers_running_trials_alone(tmp_path):
    journal = tmp_path / "s.journal"
    study = open_study(journal, "e", 0, PRUNER)
    with claim_lock(journal):
        alive = claim_trials(study, KD_SPACE, 4, 0, worker=1, most=1)  # worker 1, still running
    with claim_lock(journal):
        gone = claim_trials(study, KD_SPACE, 4, 0, worker=3, most=1)  # a worker no longer configured
    study = run_study(journal, "e", KD_SPACE, 4, 0, PRUNER, _quick_batch(), 2, worker=0, n_workers=2)
    states = {t.number: t.state for t in study.trials}
    assert states[alive[0][0].number] == TrialState.RUNNING
    assert states[gone[0][0].number] == TrialState.FAIL
    assert len(finished(study)) == 3  # 4 claimed in all: 3 finished here + worker 1's running one


def test_start_up_points_do_not_depend_on_the_stack_size(tmp_path):
    """TPE's random start-up trials draw the same (T, alpha) one by one, in stacks, or by several
    workers: trial n is drawn with seed + n."""
    points = []
    for batch in (1, 4):
        study = run_study(tmp_path / f"b{batch}.journal", "e", KD_SPACE, 8, 0, PRUNER, _quick_batch(), batch)
        points.append([t.params for t in study.trials])
    assert points[0] == points[1]
    assert len({tuple(p.values()) for p in points[0]}) == 8
