"""What the end-to-end tests share: a real `snakemake` over the repository's Snakefile in a
temporary directory, and readers of what its jobs left in MLflow and Optuna there.

    proc = ok(snakemake(tmp_path, {"experiment": "tiny", ...}, "--cores", "2"))
    runs = all_runs(tmp_path, "tiny")          # results/mlflow.db, the default sqlite store
    study = only_study(results / "tune" / "kd" / "teacher__student" / "study.journal")

Imported by name (`from helpers import ...`): pytest puts tests/ on sys.path.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# What a training job logs into its run, beside the model (mlflow.pytorch.log_model).
RUN_ARTIFACTS = {"model.pt", "fit.json", "history.parquet", "config.resolved.json", "test_metrics.json"}


def snakemake_command(workdir: Path, config: dict, *args: str) -> list[str]:
    """The command line of a run of the repository's workflow in `workdir` on `config` (written to
    workdir/config.yaml)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    return [*cmd, "--configfile", str(cfg), *args]


def snakemake(
    workdir: Path, config: dict, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = snakemake_command(workdir, config, *args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: count} from a dry run's job table (its `total` row included)."""
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()]
    rows = [line.split() for line in lines if re.fullmatch(r"\w+\s+\d+", line)]
    return {rule: int(count) for rule, count in rows}


def tracking_client(workdir: Path):
    """A client on the workflow's default store, workdir/results/mlflow.db."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")


def all_runs(workdir: Path, experiment: str) -> list:
    client = tracking_client(workdir)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=5000)


def only_study(journal: Path):
    """The one Optuna study in a tuning job's journal (one study per training setting; the tests use
    one setting), or None before the job has created it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return None
    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if not names:
        return None
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)
