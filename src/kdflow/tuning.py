"""Optuna search of the KD temperature T and weight alpha for one distillation edge.

    space = SearchSpace(t_low=1, t_high=20, a_low=0, a_high=1)
    best = run_study(journal, "teacher__student", space, n_trials=16, seed=0,
                     pruner=PrunerConfig(), train_trial=lambda T, alpha, cb: fit(...).best_val_acc)

The objective is the best validation accuracy of a student trained with (T, alpha): the test split
never enters. Sampling is seeded TPE; a MedianPruner watches per-epoch validation accuracy. A
trial whose loss diverges is pruned with the reason in its user attribute `pruned_reason`.

The study lives in a JournalFileBackend file that is not a Snakemake output, so it survives a
failed or killed job: rerunning continues the study and stops once it holds `n_trials` finished
(complete or pruned) trials. Trials left RUNNING by a killed single worker are marked FAIL on
restart and do not count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from kdflow.engine import Callback, DivergenceError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILED = 5  # failed trials (crashes, not pruning) tolerated before the study gives up


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


class PruningCallback(Callback):
    """Reports validation accuracy each epoch; stops the fit when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, epoch, metrics):
        self.trial.report(metrics["val_acc"], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"median pruner at epoch {epoch}")


def open_study(journal: Path, name: str, seed: int, pruner: PrunerConfig) -> optuna.Study:
    journal.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
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
    """Mark RUNNING trials FAIL: with one worker they can only be left over from a killed job."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def run_study(
    journal: Path,
    name: str,
    space: SearchSpace,
    n_trials: int,
    seed: int,
    pruner: PrunerConfig,
    train_trial: Callable[[optuna.Trial, float, float, Callback], float],
) -> optuna.Study:
    """Run trials until the study holds `n_trials` finished ones; return the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(journal, name, seed, pruner)
    fail_stale_trials(study)

    def objective(trial: optuna.Trial) -> float:
        t = trial.suggest_float("temperature", space.t_low, space.t_high, log=True)
        a = trial.suggest_float("alpha", space.a_low, space.a_high)
        try:
            return train_trial(trial, t, a, PruningCallback(trial))
        except DivergenceError as e:
            trial.set_user_attr("pruned_reason", str(e))
            raise optuna.TrialPruned(str(e)) from e

    while (left := n_trials - count_finished(study)) > 0:
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        if failed >= MAX_FAILED:
            raise RuntimeError(f"study {name}: {failed} trials failed; see the job log")
        study.optimize(objective, n_trials=left, catch=(RuntimeError,))
    return study


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
