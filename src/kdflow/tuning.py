"""Optuna search of the KD temperature T and weight alpha for one distillation edge.

    space = SearchSpace(t_low=1, t_high=20, a_low=0, a_high=1)
    study = run_study(journal, "teacher__student", space, n_trials=16, seed=0,
                      pruner=PrunerConfig(), train_batch=train_batch, batch_size=8)

The objective is the best validation accuracy of a student trained with (T, alpha): the test split
never enters. Sampling is seeded TPE; a MedianPruner watches per-epoch validation accuracy. A
trial whose loss diverges is pruned with the reason in its user attribute `pruned_reason`.

The study lives in a JournalFileBackend file that is not a Snakemake output, so it survives a
failed or killed job: rerunning continues the study and stops once it holds `n_trials` finished
(complete or pruned) trials. Trials left RUNNING by a killed single worker are marked FAIL on
restart, do not count, and are retried first with their own (T, alpha).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class SearchSpace:
    t_low: float = 1.0
    t_high: float = 20.0
    a_low: float = 0.0
    a_high: float = 1.0


@dataclass(frozen=True)
class PrunerConfig:
    n_startup_trials: int = 4
    n_warmup_steps: int = 40  # epochs never pruned: half of the default 80


def open_study(journal: Path, name: str, seed: int, pruner: PrunerConfig) -> optuna.Study:
    journal.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps
            ),
            load_if_exists=True,
        )
    except (ValueError, KeyError, UnicodeDecodeError) as e:  # a torn/garbled journal line
        raise RuntimeError(
            f"Optuna journal {journal} is unreadable ({e}); move it away to restart this "
            "edge's study from zero"
        ) from e


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark RUNNING trials FAIL (with one worker they can only be left over from a killed job) and
    queue their parameters again, so a kill does not change which points the study explores."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        _retry(study, t)
    return len(stale)


def _retry(study: optuna.Study, trial) -> None:
    if len(trial.params) == 2:  # killed after drawing (T, alpha); otherwise nothing to repeat
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


# train_batch(trials, [(T, alpha), ...]) -> per trial: its value, or the reason it was pruned (str)
TrainBatch = Callable[[list[optuna.Trial], list[tuple[float, float]]], list[float | str]]


def run_study(
    journal: Path,
    name: str,
    space: SearchSpace,
    n_trials: int,
    seed: int,
    pruner: PrunerConfig,
    train_batch: TrainBatch,
    batch_size: int = 1,
) -> optuna.Study:
    """Run trials, `batch_size` at a time, until the study holds `n_trials` finished ones.

    A batch's trials are asked together (TPE's constant liar keeps them apart) and trained
    together by `train_batch`, which reports per-epoch values to each trial and honours its
    pruning. An exception fails the batch's trials and propagates: the job fails, and its
    rerun continues the study.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(journal, name, seed, pruner)
    fail_stale_trials(study)
    # A reopened study would otherwise restart TPE's random stream and redraw earlier points.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), constant_liar=True)
    while (left := n_trials - count_finished(study)) > 0:
        trials = [study.ask() for _ in range(min(batch_size, left))]
        params = [
            (
                t.suggest_float("temperature", space.t_low, space.t_high, log=True),
                t.suggest_float("alpha", space.a_low, space.a_high),
            )
            for t in trials
        ]
        try:
            outcomes = train_batch(trials, params)
        except BaseException:
            for t in trials:
                study.tell(t, state=TrialState.FAIL)
                _retry(study, study._storage.get_trial(t._trial_id))
            raise
        for t, outcome in zip(trials, outcomes):
            if isinstance(outcome, str):
                t.set_user_attr("pruned_reason", outcome)
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, outcome)
    return study


def should_prune(trial: optuna.Trial, epoch: int, val_acc: float) -> str:
    """Report a trial's epoch; return why it is pruned now, or ''."""
    trial.report(val_acc, epoch)
    return f"median pruner at epoch {epoch}" if trial.should_prune() else ""


def best_params(study: optuna.Study) -> dict:
    best = study.best_trial
    return {
        "temperature": best.params["temperature"],
        "alpha": best.params["alpha"],
        "val_acc": best.value,
        "trial": best.number,
        "n_finished": count_finished(study),
    }


def trials_frame(study: optuna.Study):
    """One row per trial: number, state, T, alpha, value, last epoch reached, pruned reason."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "temperature": t.params.get("temperature"),
                "alpha": t.params.get("alpha"),
                "val_acc": t.value
                if t.value is not None
                else (max(t.intermediate_values.values()) if t.intermediate_values else None),
                "epochs_run": max(t.intermediate_values, default=0),
                "pruned_reason": t.user_attrs.get("pruned_reason", ""),
            }
        )
    return pd.DataFrame(rows)
