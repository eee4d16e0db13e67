"""Optuna studies on a journal file: counts, resume after a failure, stale trials, divergence."""

import optuna
import pytest
import torch
from optuna.trial import TrialState

from kdflow.engine import DivergenceError, TrainConfig, fit, kd_objective, predict_logits, scratch_objective
from kdflow.models import build_model
from kdflow.tuning import PrunerConfig, SearchSpace, best_params, open_study, run_study, trials_frame

PRUNER = PrunerConfig(n_startup_trials=2, n_warmup_steps=1)


@pytest.fixture(scope="module")
def kd_setup(small_splits):
    train, val = small_splits
    torch.manual_seed(0)
    teacher = build_model({"family": "cnn1d", "channels": 16, "layers": 2}, (40,), 10)
    teacher = fit(teacher, train, val, TrainConfig(epochs=4, batch_size=64), scratch_objective()).model
    return train, val, predict_logits(teacher, train.x)


def make_trial_fn(kd_setup, calls):
    train, val, logits = kd_setup

    def train_trial(trial, T, alpha, prune_cb):
        calls.append(trial.number)
        torch.manual_seed(0)
        student = build_model({"family": "mlp", "hidden": [16]}, (40,), 10)
        cfg = TrainConfig(epochs=4, batch_size=64)
        return fit(
            student, train, val, cfg, kd_objective(logits, T, alpha), callbacks=[prune_cb]
        ).best_val_acc

    return train_trial


def test_study_reaches_trial_count_within_the_search_space(kd_setup, tmp_path):
    calls = []
    space = SearchSpace(2.0, 8.0, 0.1, 0.9)
    study = run_study(tmp_path / "s.journal", "e", space, 6, 0, PRUNER, make_trial_fn(kd_setup, calls))
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 6 and len(calls) == 6
    for t in finished:
        assert 2.0 <= t.params["temperature"] <= 8.0 and 0.1 <= t.params["alpha"] <= 0.9
    best = best_params(study)
    assert best["val_acc"] == max(t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))
    frame = trials_frame(study)
    assert len(frame) == 6 and set(frame.state) <= {"COMPLETE", "PRUNED"}


def test_rerun_continues_an_interrupted_study(kd_setup, tmp_path):
    journal = tmp_path / "s.journal"
    calls = []
    fn = make_trial_fn(kd_setup, calls)

    def dies_on_third(trial, T, alpha, cb):
        if trial.number == 2:
            raise KeyboardInterrupt  # the job is killed during trial 2
        return fn(trial, T, alpha, cb)

    with pytest.raises(KeyboardInterrupt):
        run_study(journal, "e", SearchSpace(), 5, 0, PRUNER, dies_on_third)
    assert calls == [0, 1]
    study = run_study(journal, "e", SearchSpace(), 5, 0, PRUNER, fn)
    states = [t.state for t in study.trials]
    assert states[2] == TrialState.FAIL  # the interrupted trial is failed, not counted
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 5
    assert calls == [0, 1, 3, 4, 5]  # finished trials were not redone; trial 2 is not retried


def test_trial_left_running_by_a_killed_worker_is_failed_on_restart(kd_setup, tmp_path):
    journal = tmp_path / "s.journal"
    study = open_study(journal, "e", 0, PRUNER)
    study.ask()  # a trial that a killed process left RUNNING
    calls = []
    study = run_study(journal, "e", SearchSpace(), 2, 0, PRUNER, make_trial_fn(kd_setup, calls))
    assert study.trials[0].state == TrialState.FAIL
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2


def test_diverging_trial_is_pruned_with_its_reason(kd_setup, tmp_path):
    fn = make_trial_fn(kd_setup, [])

    def sometimes_diverges(trial, T, alpha, cb):
        if trial.number == 1:
            raise DivergenceError("tune/t__s/trial1: training loss became nan at epoch 2")
        return fn(trial, T, alpha, cb)

    study = run_study(tmp_path / "s.journal", "e", SearchSpace(), 3, 0, PRUNER, sometimes_diverges)
    t1 = study.trials[1]
    assert t1.state == TrialState.PRUNED
    assert "nan at epoch 2" in t1.user_attrs["pruned_reason"]
    assert "nan at epoch 2" in trials_frame(study).pruned_reason[1]


def test_garbled_journal_names_the_file(tmp_path):
    journal = tmp_path / "s.journal"
    journal.write_text('{"op_code": 0, "worker_id": "x", "study_name": "e"\nnot json at all\n')
    with pytest.raises(RuntimeError, match="s.journal"):
        open_study(journal, "e", 0, PRUNER)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
