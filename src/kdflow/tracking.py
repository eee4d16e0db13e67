"""MLflow as a side channel: every job logs a run; no rule ever reads MLflow.

    spec = TrackingSpec.from_config(cfg)       # URI: $MLFLOW_TRACKING_URI > tracking.uri > sqlite DB
    init_tracking(spec)                        # once, before jobs fan out (sqlite first-use race)
    with start_run(spec, "distill/teacher__student/seed0", tags, params) as run:
        fit(..., callbacks=[MetricsCallback(run)])
        run.log_artifact(path); run.log_model(model)

Runs carry tags (role, method, seed, edge, teacher_run_id for lineage, rule, git commit, config
hash). A job killed before it ends leaves its run RUNNING; the next attempt at the same output
marks such runs KILLED before it starts a fresh one. With tracking disabled every call is a no-op.
`import mlflow` costs about a second, so it happens only when tracking is on.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kdflow.callbacks import Callback

OUTPUT_TAG = "kdflow.output"  # the job's output directory: how a rerun finds its stale runs


@dataclass(frozen=True)
class TrackingSpec:
    enabled: bool
    uri: str
    experiment: str
    artifact_root: str  # absolute file URI, so jobs started from any directory agree

    @classmethod
    def from_config(cls, cfg: dict) -> TrackingSpec:
        results = Path(cfg["results_dir"]).resolve()
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or cfg["tracking"]["uri"]
            or f"sqlite:///{results / 'mlflow.db'}"
        )
        return cls(
            enabled=cfg["tracking"]["enabled"],
            uri=uri,
            experiment=cfg["experiment"],
            artifact_root=(results / "mlartifacts" / cfg["experiment"]).as_uri(),
        )


def redact(uri: str) -> str:
    """The URI with any user:password removed, for logs and tags."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _client(spec: TrackingSpec):
    import mlflow

    mlflow.set_tracking_uri(spec.uri)
    return mlflow.MlflowClient(spec.uri)


def init_tracking(spec: TrackingSpec) -> str | None:
    """Create the backend (sqlite schema) and the experiment; return the experiment id."""
    if not spec.enabled:
        return None
    client = _client(spec)
    exp = client.get_experiment_by_name(spec.experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(spec.experiment, artifact_location=spec.artifact_root)


class Run:
    """One MLflow run (or a no-op stand-in when tracking is off)."""

    FLUSH_SECONDS = 5.0  # buffered metrics reach the store at least this often

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id
        self._buffer: list = []
        self._flushed = time.monotonic()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffered: one write per FLUSH_SECONDS instead of one per epoch (a sqlite write costs
        milliseconds, more than a small model's epoch); `end` and `flush` write the rest."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if time.monotonic() - self._flushed > self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.client is not None:
            for i in range(0, len(self._buffer), 1000):  # MLflow's log_batch limit
                self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer, self._flushed = [], time.monotonic()

    def end(self, status: str = "FINISHED") -> None:
        if self.client is not None:
            self.flush()
            self.client.set_terminated(self.run_id, status=status)

    def log_params(self, params: dict) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:6000]) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: dict) -> None:
        if self.client is not None:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, model) -> None:
        """Logged as a pickle so `mlflow.pytorch.load_model` gives back the kdflow class."""
        if self.client is None:
            return
        import mlflow
        import torch

        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                model,
                name="model",
                serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "kdflow"],
            )


def _kill_stale(client, experiment_id: str, output: str) -> None:
    stale = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{OUTPUT_TAG}` = '{output}' and attributes.status = 'RUNNING'",
    )
    for r in stale:
        client.set_terminated(r.info.run_id, status="KILLED")


def open_run(
    spec: TrackingSpec,
    name: str,
    tags: dict,
    params: dict,
    output: str,
    parent_run_id: str | None = None,
) -> Run:
    """Start a run named `name` (a no-op Run when tracking is off); end it with `Run.end`.

    Runs left RUNNING for the same output by a killed earlier attempt are marked KILLED first."""
    if not spec.enabled:
        return Run()
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = _client(spec)
    exp_id = client.get_experiment_by_name(spec.experiment).experiment_id
    output = str(Path(output).resolve())  # one job, one key, whatever the working directory
    _kill_stale(client, exp_id, output)
    all_tags = {MLFLOW_RUN_NAME: name, OUTPUT_TAG: output, **tags}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    info = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    run = Run(client, info.info.run_id)
    run.log_params(params)
    return run


@contextmanager
def start_run(
    spec: TrackingSpec,
    name: str,
    tags: dict,
    params: dict,
    output: str,
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """`open_run` as a context: the run ends FINISHED, or FAILED on an exception."""
    run = open_run(spec, name, tags, params, output, parent_run_id)
    try:
        yield run
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")


class MetricsCallback(Callback):
    """Logs each epoch's metrics to a run, one batch per epoch."""

    def __init__(self, run: Run, prefix: str = ""):
        self.run, self.prefix = run, prefix

    def on_epoch_end(self, epoch, metrics):
        self.run.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=epoch)

    def on_fit_end(self, result):
        self.run.flush()
