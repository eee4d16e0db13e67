"""Training a batch of Optuna trials for one edge: as one stacked model, or one by one.

    ctx = TrialContext(setup=..., hp=..., train=..., val=..., cfg=..., ...)
    train_batch = stacked_trainer(ctx) if stackable(ctx) else sequential_trainer(ctx)
    run_study(..., train_batch=train_batch, batch_size=8)

Both give every trial the same start (the training seed's initial weights, the method's modules
and pre-trained state, and the batch order), so a trial's value depends only on its tuned values;
each trial is a nested MLflow run under the tuning
run, ending FINISHED, or KILLED with a `pruned_reason` tag when pruned or diverged.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import torch

from kdflow import tracking as trk
from kdflow.callbacks import Callback
from kdflow.data import Split
from kdflow.distillation import Distiller, DistillSetup
from kdflow.engine import DivergenceError, TrainConfig, fit
from kdflow.stacked import can_stack, fit_stacked, stack
from kdflow.tuning import TrainBatch, should_prune


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one edge shares."""

    setup: DistillSetup  # the method, the student's spec, the teacher's outputs (computed once)
    hp: dict  # the method's values that are not tuned
    pretrained: dict | None  # the distiller's state after the method's pre-training stage
    train: Split
    val: Split
    cfg: TrainConfig
    tracking: trk.TrackingSpec
    tags: dict
    parent_run_id: str | None
    name: str  # "tune/<edge>", prefix of the trials' run names
    journal: str  # with the trial number: the trial runs' output key

    def new_distiller(self, values: dict) -> Distiller:
        return self.setup.distiller({**self.hp, **values}, self.cfg.seed, len(self.train), self.pretrained)

    def open_trial_run(self, trial: optuna.Trial, values: dict) -> trk.Run:
        return trk.open_run(
            self.tracking,
            f"{self.name}/trial{trial.number}",
            {**self.tags, "optuna_trial": trial.number},
            values,
            output=f"{self.journal}#{trial.number}",
            parent_run_id=self.parent_run_id,
        )


def stackable(ctx: TrialContext) -> bool:
    """Trials can train as one stacked model: kd without logit standardisation (the stacked loop
    computes kd's loss itself, from the cached logits: not when the inputs are augmented), on a
    family kdflow.stacked can stack."""
    return (
        ctx.setup.method.stackable
        and not ctx.setup.teacher.live
        and not ctx.hp.get("logit_std")
        and can_stack(ctx.new_distiller({}).student)
    )


def _close(run: trk.Run, best_val_acc: float, stopped: str) -> float | str:
    run.log_metrics({"best_val_acc": best_val_acc})
    if stopped:
        run.set_tags({"pruned_reason": stopped})
        run.end("KILLED")
        return stopped
    run.end("FINISHED")
    return best_val_acc


def stacked_trainer(ctx: TrialContext) -> TrainBatch:
    """All trials of a batch in one stacked model (kdflow.stacked)."""

    def train_batch(trials, params):
        stacked = stack([ctx.new_distiller(p).student for p in params])
        runs = [ctx.open_trial_run(t, p) for t, p in zip(trials, params)]

        def on_epoch(epoch, metrics, live):
            stops = {}
            for i in live:
                runs[i].log_metrics(metrics[i], step=epoch)
                if reason := should_prune(trials[i], epoch, metrics[i]["val_acc"]):
                    stops[i] = reason
            return stops

        values = [{**ctx.hp, **p} for p in params]
        temps = torch.tensor([v["temperature"] for v in values])
        alphas = torch.tensor([v["alpha"] for v in values])
        try:
            results = fit_stacked(
                stacked, ctx.train, ctx.val, ctx.cfg, ctx.setup.teacher.logits, temps, alphas, on_epoch
            )
        except BaseException:
            for run in runs:
                run.end("FAILED")
            raise
        return [_close(run, r.best_val_acc, r.stopped) for run, r in zip(runs, results)]

    return train_batch


class _Stop(Exception):
    """A trial the pruner stopped."""


class _PruneCallback(Callback):
    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, epoch, metrics):
        if reason := should_prune(self.trial, epoch, metrics["val_acc"]):
            raise _Stop(reason)


class _Accuracies(Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_epoch_end(self, epoch, metrics):
        self.values.append(metrics["val_acc"])


def sequential_trainer(ctx: TrialContext) -> TrainBatch:
    """One trial after another with the ordinary training loop (any model family)."""

    def train_batch(trials, params):
        outcomes = []
        for trial, values in zip(trials, params):
            run = ctx.open_trial_run(trial, values)
            seen = _Accuracies()
            try:
                result = fit(
                    ctx.new_distiller(values),
                    ctx.train,
                    ctx.val,
                    ctx.cfg,
                    ctx.setup.objective({**ctx.hp, **values}),
                    callbacks=[trk.MetricsCallback(run), seen, _PruneCallback(trial)],
                    stage=f"{ctx.name}/trial{trial.number}",
                )
                outcomes.append(_close(run, result.best_val_acc, ""))
            except (_Stop, DivergenceError) as e:
                outcomes.append(_close(run, max(seen.values, default=0.0), str(e)))
            except BaseException:
                run.end("FAILED")
                raise
        return outcomes

    return train_batch
