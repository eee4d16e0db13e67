"""Optuna tuning of a generative method's values (lam, lr) per distillation edge: the same three
jobs and journal as classification's (kdflow.pipeline.tune_jobs, kdflow.tuning), another objective.

    start_tuning(study, out=run.json)     create the study and the edge's MLflow tuning run
    tune_worker(study, run_file, ...)     trials until the study is full (workers share the journal)
    select_best(study, run_file, ...)     best_params.json, trials.parquet; the tuning run ends

A trial distils the student from the tuning seed's teacher without data, with its values, then
scores it on the VALIDATION split: the importance-sampled NLL with a proposal fitted on the training
split (`generative.tune_importance_samples`, `tune_proposal_steps`, fewer than the test's). The study
maximises the negated NLL; the test split never enters. Trials are not pruned: the score needs a
fitted proposal, so it is taken once, at the end of a trial.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kdflow import plan
from kdflow import tracking as trk
from kdflow.atomic import atomic_write, read_json, write_json
from kdflow.dgm.families import FAMILIES
from kdflow.dgm.jobs import GenSettings, ModelRef, distillation, load_gen_model, load_inputs
from kdflow.engine import DivergenceError, TrainConfig, fingerprint, fit
from kdflow.pipeline.jobs import DataRef, JobInfo, MethodRef
from kdflow.tuning import (
    FINISHED,
    WORKER,
    PrunerConfig,
    Range,
    best_params,
    check_complete,
    open_study,
    run_study,
    trials_frame,
)

NO_PRUNING = PrunerConfig(n_startup_trials=0, n_warmup_steps=0)  # nothing is reported to prune on


@dataclass(frozen=True)
class GenStudy:
    data: DataRef
    spec: dict  # the student's
    cfg: TrainConfig
    gen: GenSettings
    info: JobInfo
    teacher: ModelRef
    method: MethodRef  # hp: every value; the tuned ones are replaced by each trial's
    space: dict[str, Range]
    n_trials: int
    journal: Path
    tracking: trk.TrackingSpec

    @property
    def run_name(self) -> str:
        return f"tune/{self.info.path}"

    @property
    def fixed(self) -> dict:
        return {k: v for k, v in self.method.hp.items() if k not in self.space}


def _study_name(study: GenStudy) -> str:
    settings = {k: v for k, v in asdict(study.cfg).items() if k != "device"}
    t_meta = read_json(study.teacher.fit_json)
    key = fingerprint(
        settings, study.spec, t_meta["model_sha256"], {k: asdict(r) for k, r in study.space.items()},
        study.method.method, study.fixed, asdict(study.gen),
    )  # fmt: skip
    return f"{study.info.path}-{key[:8]}"


def start_tuning(study: GenStudy, out: Path) -> dict:
    name = _study_name(study)
    open_study(study.journal, name, study.cfg.seed, NO_PRUNING)
    t_meta = read_json(study.teacher.fit_json)
    tags = {**study.info.tags(), "teacher_run_id": t_meta.get("mlflow_run_id") or "none"}
    ranges = {f"search_{k}": f"[{r.low}, {r.high}]{' log' if r.log else ''}" for k, r in study.space.items()}
    params = {"model_spec": json.dumps(study.spec), "n_trials": study.n_trials, **study.fixed, **ranges}
    run = trk.open_run(study.tracking, study.run_name, tags, params, output=str(out.parent))
    record = {"study": name, "journal": str(study.journal), "run_id": run.run_id}
    write_json(out, record)
    return record


def trial_value(study: GenStudy, values: dict, splits: dict, teacher: torch.nn.Module) -> float:
    """Distil the student with `values` and return its validation NLL (nats per example)."""
    method = MethodRef(study.method.method, {**study.method.hp, **values})
    shape = tuple(splits["train"].x.shape[1:])
    student, objective, cfg = distillation(plan.bare(study.spec), shape, teacher, method, study.cfg)
    model = fit(student, splits["train"], None, cfg, objective, stage=study.run_name).model.cpu()
    family = FAMILIES[study.spec["family"]]
    x_train, x_val = splits["train"].x, splits["val"].x
    g = study.gen
    est = family.test_nll(model, x_val, x_train, g.tune_importance_samples, g.tune_proposal_steps, cfg.seed)
    return est["nll"].double().mean().item()


def tune_worker(
    study: GenStudy, run_file: Path, *, worker: int, n_workers: int, out: Path, parallel_trials: int = 1
) -> dict:
    """Run trials of the study until it holds `n_trials` claimed ones; write `out`: the trials this
    worker finished. Trials run one by one: `parallel_trials` (classification's stacking of small
    students, kdflow.stacked) does not apply to generative models and is ignored."""
    started = read_json(run_file)
    splits = load_inputs(study.data, "train", "val")
    t_meta = read_json(study.teacher.fit_json)
    teacher = load_gen_model(study.teacher.model, t_meta["model_sha256"]).to(study.cfg.device)
    teacher.requires_grad_(False)  # on the trials' device: the student trains there
    tags = {
        **study.info.tags(),
        "teacher_run_id": t_meta.get("mlflow_run_id") or "none",
        "tune_worker": worker,
    }
    name = f"{study.run_name}/worker{worker}"

    def train_batch(trials, values_list):
        outcomes = []
        for trial, values in zip(trials, values_list):
            run = trk.open_run(
                study.tracking,
                f"{study.run_name}/trial{trial.number}",
                {**tags, "optuna_trial": trial.number},
                values,
                output=f"{study.journal}#{trial.number}",
                parent_run_id=worker_run.run_id,
            )
            try:
                nll = trial_value(study, values, splits, teacher)
            except DivergenceError as e:
                run.set_tags({"pruned_reason": str(e)})
                run.end("KILLED")
                outcomes.append(f"diverged: {e}")
                continue
            run.log_metrics({"val_nll": nll})
            run.end("FINISHED")
            outcomes.append(-nll)  # the study maximises
        return outcomes

    with trk.open_run(
        study.tracking, name, tags, {"worker": worker, "n_workers": n_workers},
        output=str(out.with_suffix("")), parent_run_id=started["run_id"],
    ) as worker_run:  # fmt: skip
        started_at = time.monotonic()
        result = run_study(
            study.journal, started["study"], study.space, study.n_trials, study.cfg.seed, NO_PRUNING,
            train_batch, 1, worker=worker, n_workers=n_workers,
        )  # fmt: skip
        mine = [
            t.number
            for t in result.get_trials(deepcopy=False)
            if t.user_attrs.get(WORKER) == worker and t.state in FINISHED
        ]
        worker_run.log_metrics({"trials_run": len(mine)})
    record = {"worker": worker, "trials": mine, "fit_seconds": round(time.monotonic() - started_at, 3)}
    write_json(out, record)
    return record


def select_best(study: GenStudy, run_file: Path, out_params: Path, out_trials: Path) -> dict:
    """best_params.json ({params, val_nll, trial, n_finished}) and every trial (val_nll = -value)."""
    started = read_json(run_file)
    result = open_study(study.journal, started["study"], study.cfg.seed, NO_PRUNING)
    check_complete(result, study.n_trials, study.journal)
    best = best_params(result)
    best = {
        "params": best["params"],
        "val_nll": -best["val_acc"],
        "trial": best["trial"],
        "n_finished": best["n_finished"],
    }
    frame = trials_frame(result).rename(columns={"val_acc": "val_nll"})
    frame["val_nll"] = -frame["val_nll"]
    with atomic_write(out_trials) as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out_params, {**best, "edge": study.info.edge, "study": started["study"]})
    run = trk.attach_run(study.tracking, started["run_id"])
    run.log_params({f"best_{k}": v for k, v in best["params"].items()})
    run.log_metrics({"best_val_nll": best["val_nll"]})
    run.log_artifact(out_params)
    run.log_artifact(out_trials)
    run.end("FINISHED")
    return best
