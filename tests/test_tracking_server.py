"""The pipeline logging through a real `mlflow server` (the lab setup), with parallel jobs.

The server: sqlite backend, artifacts proxied (`--artifacts-destination`) into tmp_path, loopback only.
Every job reaches it only through MLFLOW_TRACKING_URI=http://127.0.0.1:<port>.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_workflow import TINY, ok, snakemake

CONFIG = {**TINY, "methods": ["kd"], "seeds": [0]}  # teacher, assistant, student: every kind of run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ancestors(run, runs: dict) -> list:
    chain = []
    while (parent := run.data.tags.get("mlflow.parentRunId")) in runs:
        run = runs[parent]
        chain.append(run)
    return chain


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [Path(sys.executable).with_name("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(tmp_path / "server" / "artifacts"), "--workers", "2"]
    (tmp_path / "server").mkdir()
    with open(tmp_path / "server" / "server.log", "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server" / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_a_server_chooses_the_artifact_store_a_local_store_gets_results_dir(monkeypatch):
    from kdflow.config import check_config
    from kdflow.tracking import TrackingSpec

    cfg = check_config({"results_dir": "/data/results", "experiment": "x"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.lab.example:5000")
    assert TrackingSpec.from_config(cfg).artifact_root is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert TrackingSpec.from_config(cfg).artifact_root == "file:///data/results/mlartifacts/x"


@pytest.mark.slow
def test_every_run_metric_and_artifact_reaches_the_server(tmp_path, mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    work = tmp_path / "run"
    work.mkdir()
    ok(snakemake(work, CONFIG, "--cores", "4"))  # up to 4 jobs log to the server at once
    results = work / "results" / "tiny"
    assert not (work / "results" / "mlflow.db").exists() and not (work / "results" / "mlartifacts").exists()

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tiny")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server's store, not a client path
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=1000)}

    # Every trained model: its run, per-epoch metrics, test metrics, artifacts and the model itself.
    fits = sorted(results.glob("train/*/seed0/fit.json")) + sorted(results.glob("distill/*/*/seed0/fit.json"))
    assert len(fits) == 5  # teacher, scratch student, three distillation edges
    for fit in fits:
        meta = json.loads(fit.read_text())
        run = runs[meta["mlflow_run_id"]]
        assert run.info.status == "FINISHED", fit
        assert {"val_acc", "train_loss", "best_val_acc", "test_acc", "test_ece"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == CONFIG["train"]["epochs"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model.pt", "fit.json", "history.parquet", "config.resolved.json", "test_metrics.json"} <= (
            artifacts
        ), fit
        copy = client.download_artifacts(run.info.run_id, "fit.json", str(tmp_path))
        assert Path(copy).read_bytes() == fit.read_bytes()
        models = client.search_logged_models(
            [exp.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert len(models) == 1 and models[0].status == "READY", fit
    # Lineage: a student's run names its teacher's run.
    by_name = {r.info.run_name: r for r in runs.values()}
    assert (
        by_name["distill/kd/teacher__assistant__student/seed0"].data.tags["teacher_run_id"]
        == by_name["distill/kd/teacher__assistant/seed0"].info.run_id
    )

    # Every tuning study: its run with the best values, and its trials nested under it.
    for edge in ("teacher__assistant", "teacher__student", "teacher__assistant__student"):
        tune = by_name[f"tune/kd/{edge}"]
        assert tune.info.status == "FINISHED" and "best_val_acc" in tune.data.metrics
        assert {"best_params.json", "trials.parquet"} <= {
            a.path for a in client.list_artifacts(tune.info.run_id)
        }
        trials = [r for r in runs.values() if "optuna_trial" in r.data.tags and tune in ancestors(r, runs)]
        assert len(trials) == CONFIG["tuning"]["n_trials"], edge

    # The artifacts live where the server keeps them.
    stored = list((tmp_path / "server" / "artifacts").rglob("model.pt"))
    assert len(stored) >= len(fits)
