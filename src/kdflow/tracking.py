"""MLflow as a side channel: every job logs a run; no rule ever reads MLflow.

    spec = TrackingSpec.from_config(cfg)       # URI: $MLFLOW_TRACKING_URI > tracking.uri > sqlite DB
    init_tracking(spec)                        # once, before jobs fan out (sqlite first-use race)
    with open_run(spec, "distill/teacher__student/seed0", tags, params, output) as run:
        fit(..., callbacks=[MetricsCallback(run)])    # ends FINISHED, or FAILED on an exception
        run.log_artifact(path); run.log_model(model)
    run = open_run(...); ...; run.end("KILLED")      # a run whose end the caller decides (a trial)
    run.log_dataset("mnist1d/train", sha256, "resources/mnist1d.npz", "train")  # the Dataset column
    check_cluster_uri(config, "slurm", dryrun=False)  # Snakefile onstart: no sqlite file on a cluster

Runs carry tags (role, method, seed, edge, teacher_run_id for lineage, rule, git commit, config
hash). A job killed before it ends leaves its run RUNNING; the next attempt at the same output
marks such runs KILLED before it starts a fresh one. With tracking disabled every call is a no-op.
`import mlflow` costs about a second, so it happens only when tracking is on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kdflow.callbacks import Callback

OUTPUT_TAG = "kdflow.output"  # the job's output directory: how a rerun finds its stale runs
# MLflow 3's UI reads this experiment tag (the values are its ExperimentKind enum, in the UI bundle)
# to choose between the GenAI pages (traces, overview) and the training-runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # shown as "Machine learning"
# Executors that run every job on this machine; any other (slurm, ...) runs them on other nodes.
LOCAL_EXECUTORS = ("local", "dryrun", "touch")


@dataclass(frozen=True)
class TrackingSpec:
    enabled: bool
    uri: str
    experiment: str
    # Where a new experiment's artifacts go. A store the job opens itself (sqlite, a database): an
    # absolute file URI under results/, so jobs started from any directory agree. A tracking server
    # (http[s]://): None, the server picks its own store and proxies uploads to it.
    artifact_root: str | None

    @classmethod
    def from_config(cls, cfg: dict) -> TrackingSpec:
        results = Path(cfg["results_dir"]).resolve()
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or cfg["tracking"]["uri"]
            or f"sqlite:///{results / 'mlflow.db'}"
        )
        server = urlsplit(uri).scheme in ("http", "https")
        return cls(
            enabled=cfg["tracking"]["enabled"],
            uri=uri,
            experiment=cfg["experiment"],
            artifact_root=None if server else (results / "mlartifacts" / cfg["experiment"]).as_uri(),
        )


# Secrets never reach params, tags, artifacts, tracking.json or job logs: credentials inside URLs
# (user:password@, ?token=...) and the values of secret-looking environment variables (MLflow's
# MLFLOW_TRACKING_PASSWORD / _TOKEN, AWS_SECRET_ACCESS_KEY, ...) are replaced by "***".
_USERINFO = re.compile(r"(://)[^/\s'\"]*@")  # greedy: a raw '@' inside the password is covered too
_QUERY_SECRET = re.compile(
    r"([?&](?:token|access_token|password|passwd|secret|api_key|apikey|sig|signature)=)[^&\s'\"]*", re.I
)
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|APIKEY|ACCESS_KEY|CREDENTIAL", re.I)
_MIN_SECRET = 6  # shorter values are not replaced: doing so would garble ordinary text


def secret_values(environ=None) -> list[str]:
    """Values that must never be written: secret-named variables and the tracking URI's password."""
    environ = os.environ if environ is None else environ
    found = {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET}
    try:
        password = urlsplit(environ.get("MLFLOW_TRACKING_URI", "")).password
    except ValueError:
        password = None
    if password and len(password) >= 4:
        found.add(password)
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` (a URI, a log line, a traceback) with credentials replaced by ***."""
    text = _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return text


def redact_config(obj):
    """A copy of a config (nested dicts/lists) with every string redacted, e.g. tracking.uri."""
    if isinstance(obj, dict):
        return {k: redact_config(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_config(v) for v in obj]
    return redact(obj) if isinstance(obj, str) else obj


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

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(spec.uri)  # for the fluent API (log_model); it also sets the env var,
    if before is None:  # which every later subprocess (a snakemake run) would inherit: undo that
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return mlflow.MlflowClient(spec.uri)


def init_tracking(spec: TrackingSpec) -> str | None:
    """Create the backend (sqlite schema) and the experiment, marked as a machine-learning (not
    GenAI) experiment; return the experiment id."""
    if not spec.enabled:
        return None
    client = _client(spec)
    exp = client.get_experiment_by_name(spec.experiment)
    if exp is None:
        kind = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        return client.create_experiment(spec.experiment, artifact_location=spec.artifact_root, tags=kind)
    if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older kdflow; a kind set by hand is kept
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def check_cluster_uri(config: dict, executor: str | None, dryrun: bool, environ=None) -> None:
    """Refuse to start a cluster run that would log to the default sqlite file under results/.

    Jobs on many nodes writing one sqlite file on a shared file system lock it and corrupt it, so on
    a cluster the tracking store must be named: $MLFLOW_TRACKING_URI (exported to every job) or
    tracking.uri. A URI named either way is taken as chosen. Dry runs, local runs and runs with
    tracking off need none. Raises ValueError saying what to export.
    """
    environ = os.environ if environ is None else environ
    tracking = config.get("tracking", {})
    if executor in (None, *LOCAL_EXECUTORS) or dryrun or not tracking.get("enabled", True):
        return
    if environ.get("MLFLOW_TRACKING_URI") or tracking.get("uri"):
        return
    raise ValueError(
        f"Executor {executor!r} runs jobs on other nodes, which must not share the default sqlite file "
        f"{config.get('results_dir', 'results')}/mlflow.db: export the lab's tracking server before "
        "starting, e.g. `export MLFLOW_TRACKING_URI=http://mlflow.mylab.org:5000` (every job inherits "
        "it), or set tracking.uri in the config; or run without MLflow: `tracking: {enabled: false}` "
        "in the config file."
    )


class Run:
    """One MLflow run (or a no-op stand-in when tracking is off). As a context (`with open_run(...)
    as run:`) it ends FINISHED, or FAILED on an exception."""

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

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # any exception, KeyboardInterrupt too, is FAILED
        self.end("FINISHED" if exc_type is None else "FAILED")

    def log_params(self, params: dict) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param

        secrets = secret_values()
        batch = [Param(k, redact(str(v), secrets)[:6000]) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: dict) -> None:
        if self.client is not None:
            from mlflow.entities import RunTag

            secrets = secret_values()
            batch = [RunTag(k, redact(str(v), secrets)) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """Record a dataset the run used (context: "train", "validation" or "test"): the Dataset
        column of the runs table. `source` is a path or URI; `digest` identifies the content (a
        sha256 is cut to MLflow's 36 characters). MLflow keeps one input per (name, digest) and run,
        with the context it was first logged with: splits of one file need names of their own
        ("mnist1d/train", "mnist1d/val")."""
        if self.client is None:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        scheme = urlsplit(str(source)).scheme
        dataset = Dataset(
            name=name,
            digest=digest[:36],
            source_type="local" if scheme in ("", "file") else scheme,  # as mlflow.data names them
            source=json.dumps({"uri": str(source)}),
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        inputs = [DatasetInput(dataset, tags)]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except Exception as e:  # noqa: BLE001 - the store's own exception types vary by backend
            # Two jobs logging the same new dataset at once: the sqlite store checks that the
            # (experiment, name, digest) row is absent, then inserts it, and the second insert
            # fails on the unique constraint. The row exists now: logging again links it.
            if "UNIQUE constraint failed: datasets" not in str(e):
                raise
            self.client.log_inputs(self.run_id, datasets=inputs)

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


def attach_run(spec: TrackingSpec, run_id: str | None) -> Run:
    """A Run on an existing run (a no-op Run when tracking is off or there is no id): a later job
    adds to a run an earlier job opened (evaluation metrics, a tuning run's best parameters). Like
    any Run, in a `with` statement it ends that run on leaving: only for the job that ends it."""
    if not spec.enabled or not run_id:
        return Run()
    return Run(_client(spec), run_id)


def _kill_stale(client, experiment_id: str, output: str) -> None:
    """Mark KILLED the RUNNING runs a killed attempt left for `output`, and their RUNNING nested
    runs (a tuning job's trials: their own outputs, `<journal>#<trial>`, are never reused)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    running = "attributes.status = 'RUNNING'"
    mine = f"tags.`{OUTPUT_TAG}` = '{output}'"
    stale = client.search_runs([experiment_id], filter_string=f"{mine} and {running}")
    for r in stale:
        children = client.search_runs(
            [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{r.info.run_id}' and {running}"
        )
        for child in children:
            client.set_terminated(child.info.run_id, status="KILLED")
        client.set_terminated(r.info.run_id, status="KILLED")


def open_run(
    spec: TrackingSpec,
    name: str,
    tags: dict,
    params: dict,
    output: str,
    parent_run_id: str | None = None,
) -> Run:
    """Start a run named `name` (a no-op Run when tracking is off); end it with `Run.end`, or open
    it in a `with` statement.

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
    secrets = secret_values()
    all_tags = {k: redact(str(v), secrets) for k, v in all_tags.items()}
    info = client.create_run(exp_id, run_name=name, tags=all_tags)
    run = Run(client, info.info.run_id)
    run.log_params(params)
    return run


class MetricsCallback(Callback):
    """Logs each epoch's metrics to a run, one batch per epoch."""

    def __init__(self, run: Run, prefix: str = ""):
        self.run, self.prefix = run, prefix

    def on_epoch_end(self, epoch, metrics):
        self.run.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=epoch)

    def on_fit_end(self, result):
        self.run.flush()
