"""The tracking side channel leaves the process environment as it found it."""

import os

from kdflow.tracking import TrackingSpec, init_tracking


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
