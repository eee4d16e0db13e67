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
from kdflow.engine import TrainConfig
from kdflow.jobs import CHECKPOINT_EVERY_S, DataRef, JobInfo, TeacherRef, config_hash, setup
from kdflow.tracking import TrackingSpec, redact, secret_values
from kdflow.tune_jobs import TuningStudy
from kdflow.tuning import PrunerConfig, SearchSpace


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
    jobs.CHECKPOINT_EVERY_S. 0 saves every epoch (preemptible nodes, the kill tests)."""
    return float(os.environ.get("KDFLOW_CHECKPOINT_EVERY_S", CHECKPOINT_EVERY_S))


def data_ref(config: dict, path: str) -> DataRef:
    ds = config["dataset"]
    return DataRef(Path(path), ds["val_fraction"], ds["split_seed"])


def train_settings(config: dict, seed: int, model: str) -> TrainConfig:
    """The top-level train settings with the model's own `train:` overrides on top, on the CPU:
    for jobs that do not train (they must not take a GPU slot)."""
    settings = {**config["train"], **config["models"][model].get("train", {})}
    return TrainConfig(**settings, seed=int(seed))


def train_config(config: dict, seed: int, model: str) -> TrainConfig:
    """train_settings on the job's training device (see `device`)."""
    return replace(train_settings(config, seed, model), device=device())


def job_info(config: dict, rule: str, model: str, role: str, method: str, seed, edge: str = "") -> JobInfo:
    return JobInfo(rule, model, role, method, int(seed), edge, config_hash(config))


def edge_job_info(config: dict, rule: str, teacher: str, student: str, seed) -> JobInfo:
    """A distillation edge's job: the student's role, the method the edge implies (kd/takd)."""
    return job_info(
        config,
        rule,
        student,
        plan.role(config, student),
        plan.method(config, teacher, student),
        seed,
        edge=f"{teacher}{plan.SEP}{student}",
    )


def tracking_spec(config: dict) -> TrackingSpec:
    return TrackingSpec.from_config(config)


def search_space(config: dict) -> SearchSpace:
    t, a = config["tuning"]["temperature"], config["tuning"]["alpha"]
    return SearchSpace(t["low"], t["high"], a["low"], a["high"])


def pruner_config(config: dict, model: str) -> PrunerConfig:
    p = config["tuning"]["pruner"]
    epochs = train_settings(config, 0, model).epochs
    warmup = math.ceil(p["warmup_fraction"] * epochs)
    return PrunerConfig(n_startup_trials=p["n_startup_trials"], n_warmup_steps=warmup)


def tuning_study(
    config: dict, rule: str, teacher: str, student: str, paths: dict, on_device: bool
) -> TuningStudy:
    """An edge's study as its jobs see it. `paths`: data, teacher_logits, teacher_fit, journal.
    `on_device`: the job trains (a worker), so it takes a GPU slot; the others run on the CPU."""
    seed = config["tuning"]["seed"]
    settings = train_config if on_device else train_settings
    return TuningStudy(
        data=data_ref(config, paths["data"]),
        spec=config["models"][student],
        cfg=settings(config, seed, student),
        info=edge_job_info(config, rule, teacher, student, seed),
        teacher=TeacherRef(Path(paths["teacher_logits"]), Path(paths["teacher_fit"])),
        space=search_space(config),
        n_trials=config["tuning"]["n_trials"],
        pruner=pruner_config(config, student),
        journal=Path(paths["journal"]),
        tracking=tracking_spec(config),
    )
