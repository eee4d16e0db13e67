"""One edge's Optuna study of a method's hyperparameters as three kinds of pipeline job.

    start_tuning(study, out=run.json)                 create the study and its MLflow tuning run
    tune_worker(study, run_file, worker=k, ...)       k = 0..tune_workers-1, in parallel: trials
    select_best(study, run_file, out_params, ...)     the finished study -> best_params.json

The workers share the study's journal (kdflow.tuning claims trials under a lock), so the study ends
with exactly `n_trials` finished trials whatever the worker count. MLflow: one tuning run per edge
(opened by start_tuning, ended by select_best), each worker's run nested under it and each trial's
run nested under its worker's. The study is fitted on the validation split; the test split never
enters.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kdflow import data as datamod
from kdflow import tracking as trk
from kdflow.atomic import atomic_write, read_json, sha256, write_json
from kdflow.checkpoint import load_checkpoint
from kdflow.engine import TrainConfig, fingerprint
from kdflow.pipeline.jobs import DataRef, JobInfo, MethodRef, TeacherRef, distill_setup, load_teacher
from kdflow.trials import TrialContext, sequential_trainer, stackable, stacked_trainer
from kdflow.tuning import (
    FINISHED,
    WORKER,
    PrunerConfig,
    Space,
    best_params,
    check_complete,
    count_finished,
    open_study,
    run_study,
    trials_frame,
)


@dataclass(frozen=True)
class TuningStudy:
    """What every job of one edge's study shares."""

    data: DataRef
    spec: dict  # the student's model spec
    cfg: TrainConfig  # how every trial trains the student
    info: JobInfo
    teacher: TeacherRef
    method: MethodRef  # hp: every value but the tuned ones
    pretrained: Path | None  # the method's pre-training stage output, for methods that have one
    space: Space
    n_trials: int
    pruner: PrunerConfig
    journal: Path
    tracking: trk.TrackingSpec

    @property
    def run_name(self) -> str:
        return f"tune/{self.info.path}"

    @property
    def fixed(self) -> dict:
        """The method's values that the study does not tune."""
        return {k: v for k, v in self.method.hp.items() if k not in self.space}

    def tags(self, teacher_meta: dict) -> dict:
        return {**self.info.tags(), "teacher_run_id": teacher_meta.get("mlflow_run_id") or "none"}


def start_tuning(study: TuningStudy, out: Path) -> dict:
    """Create the study in its journal (once, before workers race to) and open the edge's tuning
    run; write `out`: the study's name, the journal and the run id that the other jobs use."""
    train_split, val_split = study.data.load("train"), study.data.load("val")
    t_meta, _ = load_teacher(study.teacher)
    # One study per setting of everything a trial's value depends on: a changed lr, split or
    # teacher starts a fresh study in the same journal; a larger n_trials continues this one.
    # Not the device: a study continued on another device is the same study.
    settings = {k: v for k, v in asdict(study.cfg).items() if k != "device"}
    data_hash = datamod.content_hash(train_split, val_split)
    space = {k: asdict(r) for k, r in study.space.items()}
    pre = sha256(study.pretrained) if study.pretrained else None
    key = fingerprint(
        settings, study.spec, t_meta["model_sha256"], data_hash, space, asdict(study.pruner),
        study.method.method, study.fixed, pre,
    )  # fmt: skip
    name = f"{study.info.path}-{key[:8]}"
    open_study(study.journal, name, study.cfg.seed, study.pruner)
    params = {"model_spec": json.dumps(study.spec), "n_trials": study.n_trials, **settings}
    ranges = {f"search_{k}": f"[{r.low}, {r.high}]{' log' if r.log else ''}" for k, r in study.space.items()}
    run = trk.open_run(
        study.tracking,
        study.run_name,
        study.tags(t_meta),
        {**params, "method_name": study.method.method, **study.fixed, **ranges},
        output=str(out.parent),
    )  # ended by select_best, after the workers
    record = {"study": name, "journal": str(study.journal), "run_id": run.run_id}
    write_json(out, record)
    return record


def tune_worker(
    study: TuningStudy, run_file: Path, *, worker: int, n_workers: int, parallel_trials: int, out: Path
) -> dict:
    """Run trials of the study until it holds `n_trials` claimed ones; write `out`: the trials this
    worker finished. `parallel_trials` > 1 trains that many at once as one stacked model when the
    student's family allows it (kdflow.stacked), at most an even share of the study per worker."""
    started = read_json(run_file)
    train_split, val_split = study.data.load("train"), study.data.load("val")
    t_meta, setup = distill_setup(study.spec, study.teacher, study.method, train_split, study.cfg)
    pretrained = load_checkpoint(study.pretrained)["distiller"] if study.pretrained else None
    tags = {**study.tags(t_meta), "tune_worker": worker}
    name = f"{study.run_name}/worker{worker}"
    params = {"worker": worker, "n_workers": n_workers, "parallel_trials": parallel_trials}
    with trk.open_run(
        study.tracking, name, tags, params, output=str(out.with_suffix("")), parent_run_id=started["run_id"]
    ) as run:
        ctx = TrialContext(
            setup, study.fixed, pretrained, train_split, val_split, study.cfg,
            study.tracking, tags, run.run_id, study.run_name, str(study.journal),
        )  # fmt: skip
        stacked = parallel_trials > 1 and stackable(ctx)
        train_batch = stacked_trainer(ctx) if stacked else sequential_trainer(ctx)
        batch = min(parallel_trials, math.ceil(study.n_trials / n_workers)) if stacked else 1
        started_at = time.monotonic()
        result = run_study(
            study.journal,
            started["study"],
            study.space,
            study.n_trials,
            study.cfg.seed,
            study.pruner,
            train_batch,
            batch,
            worker=worker,
            n_workers=n_workers,
        )
        mine = [
            t.number
            for t in result.get_trials(deepcopy=False)
            if t.user_attrs.get(WORKER) == worker and t.state in FINISHED
        ]
        run.log_metrics({"trials_run": len(mine)})
        seconds = round(time.monotonic() - started_at, 3)  # its trials, apart from the job's fixed costs
    record = {"worker": worker, "trials": mine, "run_id": run.run_id, "fit_seconds": seconds}
    write_json(out, record)
    return record


def select_best(study: TuningStudy, run_file: Path, out_params: Path, out_trials: Path) -> dict:
    """Check the finished study (exactly `n_trials` finished, none running), write its best
    values and every trial, and end the edge's tuning run with them."""
    started = read_json(run_file)
    result = open_study(study.journal, started["study"], study.cfg.seed, study.pruner)
    check_complete(result, study.n_trials, study.journal)
    best = best_params(result)
    frame = trials_frame(result)
    with atomic_write(out_trials) as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out_params, {**best, "edge": study.info.edge, "study": started["study"]})
    run = trk.attach_run(study.tracking, started["run_id"])
    run.log_params({f"best_{k}": v for k, v in best["params"].items()})
    run.log_metrics({"best_val_acc": best["val_acc"], "n_finished": count_finished(result)})
    run.log_artifact(out_params)
    run.log_artifact(out_trials)
    run.end("FINISHED")
    return best
