"""Reliability of the pieces, without Snakemake: damaged stored files are refused by name with a way
to recover (never resumed or trained on silently), saves are never torn, a checkpoint resumes only
on the data it was written for, secrets are redacted, and a killed attempt's MLflow runs end KILLED.

The same faults through real `snakemake` runs are in tests/test_faults.py.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdflow import tracking as trk
from kdflow.atomic import read_json, sha256
from kdflow.checkpoint import CorruptFileError, load_checkpoint, load_model, save_model
from kdflow.config import ConfigError, check_config
from kdflow.data import load_raw
from kdflow.engine import TrainConfig, fit, scratch_objective
from kdflow.models import build_model
from kdflow.pipeline import jobs

SPEC = {"family": "cnn1d", "channels": 8, "layers": 2}
OFF = trk.TrackingSpec(enabled=False, uri="", experiment="x", artifact_root="")


def flip_byte(path: Path, frac: float = 0.5) -> None:
    """Corrupt one byte in place, as a failing disk or a bad copy would."""
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * frac)] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def info(model: str, method: str = "scratch", edge: str = "") -> jobs.JobInfo:
    return jobs.JobInfo("train", model, "teacher", method, 0, edge)


def train_job(data: jobs.DataRef, out: Path, epochs: int = 2, **kw) -> dict:
    cfg = TrainConfig(epochs=epochs, batch_size=256, seed=0)
    return jobs.train(data=data, spec=SPEC, cfg=cfg, info=info("m"), out_dir=out, tracking=OFF, **kw)


@pytest.fixture(scope="module")
def teacher(mnist1d_file, tmp_path_factory):
    """A trained teacher (1 epoch) with its cached logits, as the train and cache_logits jobs write them."""
    out = tmp_path_factory.mktemp("teacher")
    data = jobs.DataRef(mnist1d_file)
    train_job(data, out, epochs=1)
    jobs.cache_logits(
        data=data, model_file=out / "model.pt", fit_json=out / "fit.json", out=out / "logits.pt"
    )
    return data, out


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- stored-file faults


@pytest.mark.parametrize("damage", [flip_byte, truncate], ids=["bit-flip", "truncated"])
def test_damaged_resume_checkpoint_is_refused_not_resumed(small_splits, tmp_path, damage):
    """torch.load alone loads a bit-flipped tensor silently; the CRC check refuses it."""
    train, val = small_splits
    ckpt = tmp_path / "checkpoint.pt"
    cfg = TrainConfig(epochs=2, batch_size=64)
    fit(build_model(SPEC, (40,), 10), train, val, cfg, scratch_objective(), checkpoint=ckpt)
    damage(ckpt)
    longer = TrainConfig(epochs=3, batch_size=64)
    with pytest.raises(CorruptFileError) as err:
        fit(build_model(SPEC, (40,), 10), train, val, longer, scratch_objective(), checkpoint=ckpt)
    assert str(ckpt) in str(err.value) and "delete it and rerun" in str(err.value)


SAVER = """
import sys, torch
from pathlib import Path
from kdflow.checkpoint import save_checkpoint
path, i = Path(sys.argv[1]), int(sys.argv[2])
while True:  # ~16 MB per save, so a kill lands inside a write most of the time
    save_checkpoint(path, {"i": i, "w": torch.full((4_000_000,), float(i))})
    i += 1
"""


def test_a_save_killed_midway_never_leaves_a_torn_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for kill in range(5):
        base = 1000 * kill  # each process numbers its saves from here
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(base)])
        while not path.exists() or load_checkpoint(path)["i"] < base:
            assert proc.poll() is None
            time.sleep(0.01)
        time.sleep(0.05 + 0.07 * kill)  # different offsets into a save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ck = load_checkpoint(path)  # the last complete save, never a torn one
        assert ck["i"] >= base and torch.equal(ck["w"], torch.full((4_000_000,), float(ck["i"])))
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(".checkpoint.pt.") and n.endswith(".tmp") for n in leftovers)


def test_checkpoint_written_for_other_data_is_not_resumed(mnist1d_file, tmp_path):
    """Same model, config and seed, another train/val split: the old state must not be picked up."""
    train_job(jobs.DataRef(mnist1d_file, split_seed=0), tmp_path / "run")
    first = weights(tmp_path / "run" / "model.pt")
    train_job(jobs.DataRef(mnist1d_file, split_seed=1), tmp_path / "run")  # same dir: its checkpoint.pt
    train_job(jobs.DataRef(mnist1d_file, split_seed=1), tmp_path / "fresh")
    second, fresh = weights(tmp_path / "run" / "model.pt"), weights(tmp_path / "fresh" / "model.pt")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert all(torch.equal(second[k], fresh[k]) for k in fresh)


def weights(path: Path) -> dict:
    return load_model(path).state_dict()


def test_damaged_teacher_logits_are_refused_naming_file_and_recovery(teacher, tmp_path):
    data, out = teacher
    t = copy_of(out, tmp_path)
    flip_byte(t / "logits.pt")
    student = tmp_path / "student"
    with pytest.raises(CorruptFileError) as err:
        ref = jobs.TeacherRef(t / "logits.pt", t / "fit.json", t / "model.pt")
        kd = jobs.MethodRef("kd", {"temperature": 4.0, "alpha": 0.5, "logit_std": False})
        train_job(data, student, teacher=ref, method=kd)
    assert str(t / "logits.pt") in str(err.value) and "cache_logits recomputes it" in str(err.value)
    assert not (student / "checkpoint.pt").exists() and not (student / "model.pt").exists()


@pytest.mark.parametrize("damage", [flip_byte, truncate], ids=["bit-flip", "truncated"])
def test_damaged_model_is_refused_by_its_readers(teacher, tmp_path, damage):
    data, out = teacher
    t = copy_of(out, tmp_path)
    damage(t / "model.pt")
    with pytest.raises(CorruptFileError, match=r"model\.pt .*sha256.*Delete it and rerun"):
        jobs.evaluate(data=data, model_file=t / "model.pt", fit_json=t / "fit.json",
                      out=tmp_path / "test_metrics.json", tracking=OFF)  # fmt: skip
    with pytest.raises(CorruptFileError, match=r"model\.pt"):
        jobs.cache_logits(data=data, model_file=t / "model.pt", fit_json=t / "fit.json", out=t / "l.pt")
    assert not (tmp_path / "test_metrics.json").exists() and not (t / "l.pt").exists()


def test_equal_models_are_equal_files(teacher, tmp_path):
    """A rewritten model.pt (e.g. from its final checkpoint) keeps the sha256 its readers recorded."""
    model = load_model(teacher[1] / "model.pt")
    sha = [save_model(tmp_path / name, model, SPEC, (40,), 10) for name in ("a.pt", "b.pt")]
    assert sha[0] == sha[1] == sha256(teacher[1] / "model.pt")


def test_deleted_model_is_rewritten_from_the_final_checkpoint_without_training(mnist1d_file, tmp_path):
    """The documented recovery for a damaged model.pt: delete it and rerun."""
    data, out = jobs.DataRef(mnist1d_file), tmp_path / "run"
    first = train_job(data, out)
    ckpt_mtime = (out / "checkpoint.pt").stat().st_mtime_ns
    (out / "model.pt").unlink()
    again = train_job(data, out)
    assert again["model_sha256"] == first["model_sha256"]  # the same bytes: students stay valid
    assert (out / "checkpoint.pt").stat().st_mtime_ns == ckpt_mtime  # no epoch ran


def test_damaged_fit_json_names_itself(teacher, tmp_path):
    t = copy_of(teacher[1], tmp_path)
    truncate(t / "fit.json")
    with pytest.raises(ValueError, match=r"fit\.json is not valid JSON.*delete it and rerun"):
        read_json(t / "fit.json")


def test_bit_flip_in_dataset_file_names_itself(mnist1d_file, tmp_path):
    bad = tmp_path / "mnist1d-seed42.npz"
    shutil.copy(mnist1d_file, bad)
    flip_byte(bad, 0.3)
    with pytest.raises(ValueError, match=r"mnist1d-seed42\.npz is unreadable .*CRC.*regenerate"):
        load_raw(bad)


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "text,secret",
    [
        ("http://alice:hunter2x@127.0.0.1:5000/api", "hunter2x"),
        ("https://alice:p@ss@word@mlflow.example.org", "ss@word"),  # a raw '@' in the password
        ("https://ghp_tok3n1234@mlflow.example.org", "ghp_tok3n1234"),  # a token as the user
        ("API request to http://u:s3cr3t-pw@host:1/api/2.0 failed", "s3cr3t-pw"),
        ("https://host/api?token=abc123def&x=1", "abc123def"),
        ("{'uri': 'http://u:quoted-pw@h:1'}", "quoted-pw"),
    ],
)
def test_redact_removes_credentials_from_uris_and_text(text, secret):
    out = trk.redact(text, secrets=[])
    assert secret not in out and "***" in out


def test_secret_values_come_from_secret_named_env_vars_and_the_tracking_uri():
    env = {
        "MLFLOW_TRACKING_PASSWORD": "pw-from-env",
        "MLFLOW_TRACKING_TOKEN": "tok-from-env",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "MLFLOW_TRACKING_URI": "http://bob:uri-password@h:1",
        "HOME": "/root",
        "SHORT_TOKEN": "abc",  # too short to replace safely
    }
    found = trk.secret_values(env)
    assert {"pw-from-env", "tok-from-env", "aws-secret-value", "uri-password"} <= set(found)
    assert "/root" not in found and "abc" not in found
    assert trk.redact("log: pw-from-env and aws-secret-value", found) == "log: *** and ***"


def test_resolved_config_is_redacted():
    cfg = {"tracking": {"uri": "https://alice:cfg-secret@mlflow.example.org"}, "seeds": [0, 1]}
    out = trk.redact_config(cfg)
    assert out == {"tracking": {"uri": "https://***@mlflow.example.org"}, "seeds": [0, 1]}
    assert cfg["tracking"]["uri"].startswith("https://alice")  # the job's own config is untouched


FAILING_JOB = """
import sys
from kdflow.pipeline.smk import job_log
with job_log(sys.argv[1]):
    print("connecting to http://alice:uri-secret-1@127.0.0.1:1 with env-secret-2")
    raise RuntimeError("API request to http://alice:uri-secret-1@127.0.0.1:1/api failed")
"""


def test_job_log_and_the_failed_jobs_traceback_are_redacted(tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://alice:uri-secret-1@127.0.0.1:1",
        "KDFLOW_TEST_API_TOKEN": "env-secret-2",
    }
    log = tmp_path / "job.log"
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_JOB, str(log)], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    for text in (log.read_text(), proc.stdout + proc.stderr):
        assert "RuntimeError: API request to http://***@127.0.0.1:1/api failed" in text
        assert "uri-secret-1" not in text and "env-secret-2" not in text
    assert "connecting to http://***@127.0.0.1:1 with ***" in log.read_text()


# ----------------------------------------------------------------------------- tracking


def test_rerun_marks_a_killed_attempts_runs_and_nested_trials_killed(tmp_path, monkeypatch):
    """A killed tuning job leaves its run and its trials' runs RUNNING; the trials' outputs
    (`<journal>#<n>`) are never reused, so they must be ended through their parent."""
    from mlflow import MlflowClient

    monkeypatch.setenv("KDFLOW_TEST_API_TOKEN", "env-secret-3")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = trk.TrackingSpec(True, uri, "e", (tmp_path / "art").as_uri())
    trk.init_tracking(spec)
    out = tmp_path / "tune" / "t__s"
    parent = trk.open_run(
        spec, "tune/t__s", {"role": "student"}, {"uri": "http://u:env-secret-3@h:1"}, str(out)
    )
    trial = trk.open_run(spec, "tune/t__s/trial0", {}, {}, f"{out}/study.journal#0", parent.run_id)
    other = trk.open_run(spec, "train/t/seed0", {}, {}, str(tmp_path / "train"))  # another job: untouched

    fresh = trk.open_run(spec, "tune/t__s", {}, {}, str(out))  # the rerun of the killed job
    client = MlflowClient(uri)
    status = {r: client.get_run(r.run_id).info.status for r in (parent, trial, other, fresh)}
    assert status == {parent: "KILLED", trial: "KILLED", other: "RUNNING", fresh: "RUNNING"}
    tag = trk.OUTPUT_TAG
    assert client.get_run(fresh.run_id).data.tags[tag] == client.get_run(parent.run_id).data.tags[tag]
    assert client.get_run(parent.run_id).data.params["uri"] == "http://***@h:1"


def test_evaluate_writes_its_metrics_into_the_training_run(teacher, tmp_path):
    """Run.log_metrics buffers; evaluate logs into a run it does not end, so it must flush."""
    from mlflow import MlflowClient

    data, out = teacher
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = trk.TrackingSpec(True, uri, "e", (tmp_path / "art").as_uri())
    trk.init_tracking(spec)
    run = trk.open_run(spec, "train/m/seed0", {}, {}, str(out))
    run.end()
    t = copy_of(out, tmp_path)
    meta = {**read_json(t / "fit.json"), "mlflow_run_id": run.run_id}
    (t / "fit.json").write_text(json.dumps(meta))
    row = jobs.evaluate(data=data, model_file=t / "model.pt", fit_json=t / "fit.json",
                        out=tmp_path / "test_metrics.json", tracking=spec)  # fmt: skip
    metrics = MlflowClient(uri).get_run(run.run_id).data.metrics
    assert metrics["test_acc"] == row["test_acc"] and metrics["test_nll"] == row["test_nll"]


# ----------------------------------------------------------------------------- tracking URI


@pytest.mark.parametrize(
    "uri,problem",
    [
        ("http://", "has no host"),
        ("https://:5000", "has no host"),
        ("https://host:99999", "malformed"),
        ("http://host:port", "malformed"),
        ("sqlite:///", "names no database file"),
        ("http://alice:pw-in-uri@", "has no host"),
    ],
)
def test_malformed_tracking_uri_is_refused_without_echoing_a_password(uri, problem):
    with pytest.raises(ConfigError) as err:
        check_config({"tracking": {"uri": uri}})
    assert "tracking.uri" in str(err.value) and problem in str(err.value)
    assert "pw-in-uri" not in str(err.value)
