"""Adapters from Snakemake's job objects to kdflow's dataclasses, so scripts stay a few lines.

    with job_log(snakemake.log[0]):
        jobs.train(data=data_ref(snakemake.config, snakemake.input.data), ...)

Everything here takes plain values (a config dict, paths), so it is tested without Snakemake.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from kdflow import devices, plan
from kdflow.atomic import read_json
from kdflow.engine import TrainConfig
from kdflow.methods import METHODS
from kdflow.pipeline.jobs import (
    CHECKPOINT_EVERY_S,
    DataRef,
    JobInfo,
    MethodRef,
    TeacherRef,
    config_hash,
    setup,
)
from kdflow.pipeline.tune_jobs import TuningStudy
from kdflow.registry import GEN_METHODS
from kdflow.tracking import TrackingSpec, redact, secret_values
from kdflow.tuning import PrunerConfig, Range


class _Redacting:
    """A text stream that passes everything through `kdflow.tracking.redact` (secrets -> ***)."""

    def __init__(self, stream, secrets: list[str]):
        self._stream, self._secrets = stream, secrets

    def write(self, text: str) -> int:
        return self._stream.write(redact(text, self._secrets))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _redacting_excepthook(exc_type, exc, tb) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))


@contextmanager
def job_log(path: str, threads: int = 1) -> Iterator[None]:
    """Send the job's stdout/stderr (progress bars included) to its log; set torch threads.

    Whatever reaches the log, and the traceback of a failed job that Python prints on exit (which
    Snakemake shows), has credentials redacted: an MLflow error message quotes the full tracking
    URI, password included."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.excepthook = _redacting_excepthook
    with open(path, "w", buffering=1) as f:
        log = _Redacting(f, secret_values())
        out, err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            setup(threads)
            yield
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            sys.stdout, sys.stderr = out, err


def device() -> str:
    """The job's training device: its own GPU slot (see kdflow.devices), or the CPU."""
    devices.acquire()  # before torch.cuda.is_available(), which starts CUDA with the devices it sees
    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_every_s() -> float:
    """Seconds between resume checkpoints of a training job: $KDFLOW_CHECKPOINT_EVERY_S, else
    kdflow.pipeline.jobs.CHECKPOINT_EVERY_S. 0 saves every epoch (preemptible nodes, the kill tests)."""
    return float(os.environ.get("KDFLOW_CHECKPOINT_EVERY_S", CHECKPOINT_EVERY_S))


def data_ref(config: dict, path: str) -> DataRef:
    ds = config["dataset"]
    return DataRef(Path(path), ds["val_fraction"], ds["split_seed"])


def train_settings(config: dict, seed: int, model: str) -> TrainConfig:
    """The top-level train settings with the model's own `train:` overrides on top, on the CPU:
    for jobs that do not train (they must not take a GPU slot)."""
    settings = plan.train_settings(config, model)
    augment = settings.pop("augment", {})
    settings["milestones"] = tuple(settings.get("milestones", ()))
    return TrainConfig(
        **settings,
        augment_crop=augment.get("crop", 0),
        augment_flip=augment.get("flip", False),
        seed=int(seed),
    )


def train_config(config: dict, seed: int, model: str) -> TrainConfig:
    """train_settings on the job's training device (see `device`)."""
    return replace(train_settings(config, seed, model), device=device())


def job_info(config: dict, rule: str, model: str, role: str, method: str, seed, edge: str = "") -> JobInfo:
    return JobInfo(rule, model, role, method, int(seed), edge, config_hash(config))


def edge_job_info(config: dict, rule: str, method: str, lineage: str, seed) -> JobInfo:
    """A distillation job: the last model of `lineage`, distilled by the row `method`."""
    chain = plan.split(lineage)
    return replace(
        job_info(
            config, rule, chain[-1], plan.role(config, lineage), method, seed, plan.SEP.join(chain[-2:])
        ),
        lineage=lineage,
    )


def teacher_ref(inputs) -> TeacherRef:
    """The teacher files a rule's input functions name (common.smk: get_teacher)."""
    return TeacherRef(
        Path(inputs["teacher_logits"]), Path(inputs["teacher_fit"]), Path(inputs["teacher_model"])
    )


def method_ref(config: dict, name: str, tuned_file: str | None = None) -> MethodRef:
    """The row `name`'s method with every hyperparameter: the authors' defaults, the config's
    `params`, then the values its study chose (best_params.json), when it was tuned."""
    spec = plan.method_by_name(config, name)
    hp = METHODS[spec.method].resolve(spec.params)
    if tuned_file:
        best = read_json(tuned_file)["params"]
        hp.update({k: v for k, v in best.items() if k in hp})
    return MethodRef(spec.method, hp)


def edge_job(config: dict, rule: str, wildcards, inputs, spec: dict) -> dict:
    """What a distillation job and a method's stage before it share: the arguments of
    kdflow.pipeline.jobs.train and .pretrain for the edge that ends `wildcards.lineage`, by the row
    `wildcards.method` (with its tuned values when `inputs` has them)."""
    method, lineage, seed = wildcards.method, wildcards.lineage, wildcards.seed
    return {
        "data": data_ref(config, inputs["data"]),
        "spec": spec,
        "cfg": train_config(config, seed, plan.student(lineage)),
        "info": edge_job_info(config, rule, method, lineage, seed),
        "tracking": tracking_spec(config),
        "teacher": teacher_ref(inputs),
        "method": method_ref(config, method, inputs.get("tuned")),
        "checkpoint_every_s": checkpoint_every_s(),
    }


def published(config: dict) -> dict:
    """The published numbers a config quotes, for the report: {values: {pair lineage: {row: %}},
    sources: {row: where from}, note: the protocol behind them}."""
    values = {
        pair.lineage: entry["published"]
        for pair, entry in zip(plan.pairs(config), config["pairs"], strict=True)
        if entry.get("published")
    }
    return {"values": values, **config["published"]}


def method_rows(config: dict) -> list[dict]:
    """Each method row of the experiment with where its method comes from, for the report."""
    registry = GEN_METHODS if config.get("task") == "generative" else METHODS
    rows = []
    for spec in plan.methods(config):
        m = registry[spec.method]
        info = {"paper": m.paper, "source": m.source, "reconstruction": m.reconstruction}
        rows.append({"row": spec.name, "method": spec.method, "params": dict(spec.params), **info})
    return rows


def tracking_spec(config: dict) -> TrackingSpec:
    return TrackingSpec.from_config(config)


def search_space(config: dict, name: str) -> dict[str, Range]:
    """What the row `name`'s study tunes: the method's tuned values less those the config fixes,
    each over the method's range or the config's `search` range."""
    spec = plan.method_by_name(config, name)
    method = METHODS[spec.method]
    space = {}
    for p in method.tune:
        if p in spec.params:
            continue
        declared = method.params[p]
        r = spec.search.get(p, {"low": declared.low, "high": declared.high})
        space[p] = Range(float(r["low"]), float(r["high"]), declared.log)
    return space


def pruner_config(config: dict, model: str) -> PrunerConfig:
    p = config["tuning"]["pruner"]
    epochs = train_settings(config, 0, model).epochs
    warmup = math.ceil(p["warmup_fraction"] * epochs)
    return PrunerConfig(n_startup_trials=p["n_startup_trials"], n_warmup_steps=warmup)


def tuning_study(config: dict, rule: str, method: str, lineage: str, paths, on_device: bool) -> TuningStudy:
    """An edge's study as its jobs see it. `paths`: data, teacher_logits, teacher_fit,
    teacher_model, journal, and pretrain for a method with a pre-training stage. `on_device`: the
    job trains (a worker), so it takes a GPU slot; the others run on the CPU."""
    seed = config["tuning"]["seed"]
    student = plan.student(lineage)
    settings = train_config if on_device else train_settings
    return TuningStudy(
        data=data_ref(config, paths["data"]),
        spec=config["models"][student],
        cfg=settings(config, seed, student),
        info=edge_job_info(config, rule, method, lineage, seed),
        teacher=teacher_ref(paths),
        method=method_ref(config, method),
        pretrained=Path(paths["pretrain"]) if "pretrain" in paths else None,
        space=search_space(config, method),
        n_trials=config["tuning"]["n_trials"],
        pruner=pruner_config(config, student),
        journal=Path(paths["journal"]),
        tracking=tracking_spec(config),
    )
