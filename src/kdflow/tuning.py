"""Optuna search of a method's hyperparameters (kd: the temperature T and weight alpha) for one
distillation edge.

    space = {"temperature": Range(1, 20, log=True), "alpha": Range(0, 1)}
    study = run_study(journal, "kd/teacher__student", space, n_trials=16, seed=0,
                      pruner=PrunerConfig(), train_batch=train_batch, batch_size=8)

The objective is the best validation accuracy of a student trained with those values: the test split
never enters. Sampling is seeded TPE; a MedianPruner watches per-epoch validation accuracy. A
trial whose loss diverges is pruned with the reason in its user attribute `pruned_reason`.

The study lives in a JournalFileBackend file that is not a Snakemake output, so it survives a
failed or killed job: rerunning continues the study and stops once it holds `n_trials` finished
(complete or pruned) trials.

Several workers (processes, possibly on different hosts of a shared file system) can run one study:
each claims trials under an flock on `<journal>.claim`, counting finished and running trials
against `n_trials`, so the study ends with exactly `n_trials` finished trials whatever the
worker count. A trial records the worker that claimed it (user attribute `worker`). A worker that
starts again after a kill fails the RUNNING trials it left (no other live process can own them:
Snakemake runs one instance of a job), and those of workers that no longer exist, and queues their
values to be retried first: a kill does not change which points the study explores. RUNNING
trials of the other workers are left alone: they are alive.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Range:
    """One tuned hyperparameter's search range."""

    low: float
    high: float
    log: bool = False


# Name -> range. The default is kd's, the first method tuned here.
Space = dict[str, Range]
KD_SPACE: Space = {"temperature": Range(1.0, 20.0, log=True), "alpha": Range(0.0, 1.0)}


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


WORKER = "worker"  # user attribute: the worker that claimed the trial
RETRY_OF = "retry_of"  # user attribute of a queued retry: the number of the trial it repeats


@contextmanager
def claim_lock(journal: Path) -> Iterator[None]:
    """Serialise claims among the workers of every study in `journal` (flock: the kernel drops it
    when a worker dies, SIGKILL included; on NFS it is a POSIX lock on the server)."""
    fd = os.open(f"{journal}.claim", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _is_stale(trial: optuna.trial.FrozenTrial, worker: int, n_workers: int) -> bool:
    owner = trial.user_attrs.get(WORKER)
    # No owner: its claim was killed between ask and tag, and claims run under the lock we hold.
    return owner is None or owner == worker or owner >= n_workers


def fail_stale_trials(study: optuna.Study, worker: int, n_workers: int, space: Space = KD_SPACE) -> int:
    """Mark FAIL the RUNNING trials a killed earlier run of `worker` left (or a worker beyond
    `n_workers`, which no longer runs) and queue their parameters again. Call under claim_lock."""
    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if _is_stale(t, worker, n_workers)
    ]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        _retry(study, t.params, t.number, space)
    return len(stale)


def _retry(study: optuna.Study, params: dict, number: int, space: Space) -> None:
    if set(params) == set(space):  # killed after drawing its values; otherwise nothing to repeat
        study.enqueue_trial(params, user_attrs={RETRY_OF: number})


def claim_trials(
    study: optuna.Study, space: Space, n_trials: int, seed: int, worker: int, most: int
) -> list[tuple[optuna.Trial, dict[str, float]]]:
    """Ask up to `most` trials with their values, as many as the study still lacks: queued
    retries first (study.ask takes WAITING trials first), then TPE draws. Call under claim_lock, so
    that two workers never both take the last places. Empty when finished + running = n_trials."""
    claimed = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
    k = min(most, n_trials - claimed)
    if k <= 0:
        return []
    claims = []
    for _ in range(k):
        # Trial n draws with seed + n, whatever the batch size or worker count: TPE's random
        # start-up trials are the same points in every layout, a reopened study does not redraw
        # earlier points, and two workers never share a seed (numbers are unique under the lock).
        number = len(study.get_trials(deepcopy=False))  # the next trial's (study.trials deep-copies)
        study.sampler = optuna.samplers.TPESampler(seed=seed + number, constant_liar=True)
        t = study.ask()
        t.set_user_attr(WORKER, worker)
        params = {name: t.suggest_float(name, r.low, r.high, log=r.log) for name, r in space.items()}
        claims.append((t, params))
    return claims


# train_batch(trials, [{name: value}, ...]) -> per trial: its value, or the reason it was pruned (str)
TrainBatch = Callable[[list[optuna.Trial], list[dict[str, float]]], list[float | str]]


def run_study(
    journal: Path,
    name: str,
    space: Space,
    n_trials: int,
    seed: int,
    pruner: PrunerConfig,
    train_batch: TrainBatch,
    batch_size: int = 1,
    worker: int = 0,
    n_workers: int = 1,
) -> optuna.Study:
    """Run trials, `batch_size` at a time, until the study holds `n_trials` claimed trials, and
    return it; with one worker it then holds `n_trials` finished ones.

    A batch's trials are claimed together (TPE's constant liar keeps them apart, also from other
    workers' running trials) and trained together by `train_batch`, which reports per-epoch values
    to each trial and honours its pruning. An exception fails the batch's trials, queues them for
    a retry and propagates: the job fails, and its rerun continues the study.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(journal, name, seed, pruner)
    with claim_lock(journal):
        fail_stale_trials(study, worker, n_workers, space)
    while True:
        with claim_lock(journal):
            claims = claim_trials(study, space, n_trials, seed, worker, batch_size)
        if not claims:
            return study
        trials = [t for t, _ in claims]
        try:
            outcomes = train_batch(trials, [p for _, p in claims])
        except BaseException:
            with claim_lock(journal):  # so the retries are claimed before any fresh draw
                for t in trials:
                    study.tell(t, state=TrialState.FAIL)
                    _retry(study, t.params, t.number, space)
            raise
        for t, outcome in zip(trials, outcomes):
            if isinstance(outcome, str):
                t.set_user_attr("pruned_reason", outcome)
                study.tell(t, state=TrialState.PRUNED)
            else:
                study.tell(t, outcome)


class IncompleteStudyError(RuntimeError):
    """A study does not hold the number of finished trials it should."""


def check_complete(study: optuna.Study, n_trials: int, journal: Path) -> None:
    """Raise, naming the study and its journal, unless it holds `n_trials` finished trials and none
    is still running (every worker has ended). Claims stop at `n_trials`, so a study holds more only
    when an earlier run had a larger n_trials (the same study continues): all of them then count."""
    finished = count_finished(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if finished < n_trials or running:
        raise IncompleteStudyError(
            f"study {study.study_name} in {journal} holds {finished} finished trials of "
            f"{n_trials}, {len(running)} still RUNNING (trials {[t.number for t in running]}): "
            "a worker ended early; rerun the same command and its workers finish the study"
        )


def should_prune(trial: optuna.Trial, epoch: int, val_acc: float) -> str:
    """Report a trial's epoch; return why it is pruned now, or ''."""
    trial.report(val_acc, epoch)
    return f"median pruner at epoch {epoch}" if trial.should_prune() else ""


def best_params(study: optuna.Study) -> dict:
    best = study.best_trial
    return {
        "params": dict(best.params),
        "val_acc": best.value,
        "trial": best.number,
        "n_finished": count_finished(study),
    }


def trials_frame(study: optuna.Study):
    """One row per trial: number, state, its tuned values, value, last epoch reached, pruned reason."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                **t.params,
                "val_acc": t.value
                if t.value is not None
                else (max(t.intermediate_values.values()) if t.intermediate_values else None),
                "epochs_run": max(t.intermediate_values, default=0),
                "pruned_reason": t.user_attrs.get("pruned_reason", ""),
            }
        )
    return pd.DataFrame(rows)
