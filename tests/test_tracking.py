"""The tracking side channel: runs as contexts, and the process environment left as it was found."""

import os

import pytest

from kdflow.tracking import TrackingSpec, check_cluster_uri, init_tracking, open_run


def test_opening_a_tracking_client_does_not_leak_the_uri_into_the_environment(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which later subprocesses (a snakemake
    # run started from the same process) would inherit and log to the wrong store.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = TrackingSpec(True, f"sqlite:///{tmp_path / 'a.db'}", "e", (tmp_path / "art").as_uri())
    assert init_tracking(spec) is not None
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    init_tracking(spec)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"


def spec_in(tmp_path) -> TrackingSpec:
    spec = TrackingSpec(True, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", (tmp_path / "art").as_uri())
    init_tracking(spec)
    return spec


def test_a_run_in_a_with_block_ends_finished_or_failed_on_an_exception(tmp_path):
    from mlflow import MlflowClient

    spec = spec_in(tmp_path)
    with open_run(spec, "train/m/seed0", {"role": "teacher"}, {"lr": 0.1}, output=str(tmp_path / "a")) as ok:
        ok.log_metrics({"val_acc": 0.5}, step=1)
    with (
        pytest.raises(KeyboardInterrupt),
        open_run(spec, "train/m/seed1", {}, {}, str(tmp_path / "b")) as bad,
    ):
        raise KeyboardInterrupt
    client = MlflowClient(spec.uri)
    done = client.get_run(ok.run_id)
    assert done.info.status == "FINISHED" and done.info.run_name == "train/m/seed0"
    assert done.data.tags["role"] == "teacher" and done.data.params == {"lr": "0.1"}
    assert done.data.metrics == {"val_acc": 0.5}  # the buffered metric was flushed at the end
    assert client.get_run(bad.run_id).info.status == "FAILED"


def test_with_tracking_off_a_run_is_a_no_op(tmp_path):
    spec = TrackingSpec(False, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", None)
    with open_run(spec, "train/m/seed0", {}, {"lr": 0.1}, str(tmp_path)) as run:
        run.log_metrics({"val_acc": 0.5}, step=1)
        run.log_model(None)
    assert run.run_id is None and not (tmp_path / "mlflow.db").exists()


def test_a_logged_model_loads_back_through_mlflow_as_the_kdflow_model(tmp_path):
    import mlflow
    import torch

    from kdflow.models import build_model

    model = build_model({"family": "mlp", "hidden": [16]}, (40,), 10).eval()
    spec = spec_in(tmp_path)
    with open_run(spec, "train/m/seed0", {}, {}, str(tmp_path / "out")) as run:
        run.log_model(model)
    assert len(mlflow.MlflowClient(spec.uri).get_run(run.run_id).outputs.model_outputs) == 1

    loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    x = torch.randn(8, 40)
    assert type(loaded) is type(model) and torch.equal(loaded.eval()(x), model(x))


def test_the_experiment_opens_on_its_training_runs_not_the_genai_pages(tmp_path):
    from mlflow import MlflowClient

    spec = spec_in(tmp_path)
    client = MlflowClient(spec.uri)
    assert client.get_experiment_by_name("e").tags["mlflow.experimentKind"] == "custom_model_development"
    # An experiment an older kdflow made gets the tag; a kind someone chose by hand is kept.
    old = client.create_experiment("old")
    hand = client.create_experiment("hand", tags={"mlflow.experimentKind": "classification"})
    for name in ("old", "hand"):
        init_tracking(TrackingSpec(True, spec.uri, name, None))
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(hand).tags["mlflow.experimentKind"] == "classification"


def test_a_logged_dataset_is_a_run_input_with_its_context(tmp_path):
    from mlflow import MlflowClient
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    spec = spec_in(tmp_path)
    sha = "ab" * 32  # a sha256: longer than MLflow's 36-character digest
    with open_run(spec, "train/m/seed0", {}, {}, str(tmp_path / "a")) as run:
        run.log_dataset("mnist1d/train", sha, "resources/mnist1d.npz", "train")
        run.log_dataset("mnist1d/val", sha, "resources/mnist1d.npz", "validation")
        run.log_dataset("mnist1d/val", sha, "resources/mnist1d.npz", "test")  # kept once, as validation
    inputs = MlflowClient(spec.uri).get_run(run.run_id).inputs.dataset_inputs
    contexts = {i.dataset.name: {t.key: t.value for t in i.tags} for i in inputs}
    assert contexts == {
        "mnist1d/train": {"mlflow.data.context": "train"},
        "mnist1d/val": {"mlflow.data.context": "validation"},
    }
    ds = inputs[0].dataset
    assert (ds.digest, ds.source_type) == (sha[:36], "local")
    assert get_dataset_source_from_json(ds.source, ds.source_type).uri == "resources/mnist1d.npz"


def test_a_dataset_another_job_inserted_meanwhile_is_linked_not_an_error(tmp_path):
    """Two evaluation jobs logging the same new test split at once: the loser's insert fails on
    sqlite's unique constraint (seen in CI); logging again links the row the winner wrote."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    spec = spec_in(tmp_path)
    with open_run(spec, "evaluate/a", {}, {}, str(tmp_path / "a")) as winner:
        winner.log_dataset("mnist1d/test", "cd" * 32, "resources/mnist1d.npz", "test")
    with open_run(spec, "evaluate/b", {}, {}, str(tmp_path / "b")) as loser:
        real, calls = loser.client.log_inputs, []

        def lose_the_race_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise MlflowException(
                    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                    "datasets.name, datasets.digest"
                )
            return real(*args, **kwargs)

        loser.client.log_inputs = lose_the_race_once
        loser.log_dataset("mnist1d/test", "cd" * 32, "resources/mnist1d.npz", "test")
        assert len(calls) == 2
        loser.client.log_inputs = lambda *a, **k: (_ for _ in ()).throw(MlflowException("disk full"))
        with pytest.raises(MlflowException, match="disk full"):  # anything else is not swallowed
            loser.log_dataset("mnist1d/val", "ef" * 32, "resources/mnist1d.npz", "validation")
        loser.client.log_inputs = real
    inputs = MlflowClient(spec.uri).get_run(loser.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["mnist1d/test"]


def test_with_tracking_off_logging_a_dataset_is_a_no_op(tmp_path):
    spec = TrackingSpec(False, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", None)
    with open_run(spec, "train/m/seed0", {}, {}, str(tmp_path)) as run:
        run.log_dataset("mnist1d", "abc", "resources/mnist1d.npz", "test")
    assert not (tmp_path / "mlflow.db").exists()


def cluster_config(enabled=True, uri=None) -> dict:
    return {"results_dir": "results", "tracking": {"enabled": enabled, "uri": uri}}


@pytest.mark.parametrize(
    ("config", "executor", "dryrun", "environ"),
    [
        (cluster_config(), "slurm", False, {"MLFLOW_TRACKING_URI": "http://mlflow.lab:5000"}),
        (cluster_config(uri="https://mlflow.lab"), "slurm", False, {}),
        (cluster_config(), "slurm", True, {}),  # a dry run logs nothing
        (cluster_config(enabled=False), "slurm", False, {}),
        (cluster_config(), "local", False, {}),  # the default sqlite file is fine on one machine
        (cluster_config(), None, False, {}),
        (cluster_config(), "touch", False, {}),
    ],
)
def test_a_cluster_run_with_a_named_store_or_nothing_to_log_may_start(config, executor, dryrun, environ):
    check_cluster_uri(config, executor, dryrun, environ)


def test_a_cluster_run_on_the_default_sqlite_file_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="default sqlite file") as err:
        check_cluster_uri(cluster_config(), "slurm", False, {"MLFLOW_TRACKING_URI": ""})
    assert "export MLFLOW_TRACKING_URI=" in str(err.value) and "tracking: {enabled: false}" in str(err.value)
