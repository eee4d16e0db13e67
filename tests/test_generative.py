"""task: generative — its jobs (kdflow.dgm.jobs, .tune), adapters (kdflow.dgm.smk), plan and report,
on a small slice of MNIST-1D with tiny ladder VAEs. The pipeline end to end: tests/test_workflow.py."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdflow import data, plan
from kdflow import tracking as trk
from kdflow.atomic import read_json, sha256
from kdflow.config import check_config
from kdflow.dgm import jobs, smk, tune
from kdflow.dgm.families import FAMILIES
from kdflow.dgm.family import kl_weight
from kdflow.engine import TrainConfig
from kdflow.pipeline.jobs import DataRef, JobInfo, MethodRef
from kdflow.report.generative import write_generative_report
from kdflow.tuning import Range

pytestmark = pytest.mark.usefixtures("one_thread")
OFF = trk.TrackingSpec(enabled=False, uri="", experiment="x", artifact_root="")
TEACHER = {"family": "lvae", "hidden": 32, "layers": 2, "latent": 4}
STUDENT = {"family": "lvae", "hidden": 8, "layers": 2, "latent": 4}


def _small(path: Path, noise: bool = False) -> DataRef:
    """300 training (240 train / 60 val) and 100 test MNIST-1D examples; `noise`: the training
    inputs replaced by Gaussian noise (same labels, so the same split)."""
    raw = data.load_mnist1d(None, 42)
    x = raw.x_train[:300]
    if noise:
        x = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    data.save_raw(data.RawData(x, raw.y_train[:300], raw.x_test[:100], raw.y_test[:100]), path)
    return DataRef(path)


def _train(tmp, ref, spec, epochs=3, teacher=None, method=None, name="m", **kw) -> dict:
    info = JobInfo("train", name, "teacher" if teacher is None else "student", "scratch", 0)
    if method is not None:
        info = JobInfo("distill", name, "student", method.method, 0, "t__s", lineage="t__s")
    return jobs.train(
        data=ref,
        spec=spec,
        cfg=TrainConfig(epochs=epochs, lr=3e-3, seed=0),
        gen=jobs.GenSettings(kl_warmup_epochs=2),
        info=info,
        out_dir=tmp / name,
        tracking=OFF,
        teacher=teacher,
        method=method,
        checkpoint_every_s=0,
        **kw,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("gen")
    ref = _small(tmp / "small.npz")
    meta = _train(tmp, ref, TEACHER, epochs=4, name="teacher")
    return tmp, ref, meta


def test_a_model_alone_keeps_the_epoch_of_the_lowest_validation_bound(trained):
    tmp, _, meta = trained
    history = pd.read_parquet(tmp / "teacher" / "history.parquet")
    assert meta["best_epoch"] == int(history.val_nll.idxmin()) + 1
    assert meta["best_val_nll"] == pytest.approx(history.val_nll.min())
    assert meta["model_sha256"] == sha256(tmp / "teacher" / "model.pt")
    model = jobs.load_gen_model(tmp / "teacher" / "model.pt", meta["model_sha256"])
    assert model.dims == [4, 4] and model.input_shape == (40,)


def test_the_kl_weight_warms_up_linearly():
    assert [kl_weight(e, 4) for e in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kl_weight(1, 0) == 1.0


def _teacher(tmp) -> jobs.ModelRef:
    return jobs.ModelRef(tmp / "teacher" / "model.pt", tmp / "teacher" / "fit.json")


def test_distillation_reads_no_data(trained):
    """The same student, bit for bit, whatever the training inputs are: only their count (the
    steps per epoch) enters a data-free distillation."""
    tmp, _, _ = trained
    method = MethodRef("kd4dgm", {"lam": 0.1, "lr": None})
    other = _small(tmp / "noise.npz", noise=True)
    a = _train(tmp, DataRef(tmp / "small.npz"), STUDENT, teacher=_teacher(tmp), method=method, name="a")
    b = _train(tmp, other, STUDENT, teacher=_teacher(tmp), method=method, name="b")
    assert a["model_sha256"] == b["model_sha256"]
    sa = jobs.load_gen_model(tmp / "a" / "model.pt").state_dict()
    t = jobs.load_gen_model(tmp / "teacher" / "model.pt").state_dict()
    fresh = FAMILIES["lvae"].build(STUDENT, (40,))
    assert any(not torch.equal(sa[k], fresh.state_dict()[k]) for k in sa)  # it trained
    assert sa["encoder.0.head.weight"].shape != t["encoder.0.head.weight"].shape


def test_the_student_encoder_stays_frozen_except_for_the_sample_elbo_arm(trained):
    tmp, ref, _ = trained
    torch.manual_seed(0)
    init = FAMILIES["lvae"].build(STUDENT, (40,)).state_dict()
    for method, frozen in (("kd4dgm", True), ("sample_elbo", False)):
        _train(
            tmp,
            ref,
            STUDENT,
            epochs=2,
            teacher=_teacher(tmp),
            method=MethodRef(method, {"lr": None, "lam": 0.1}),
            name=f"frozen_{method}",
        )
        s = jobs.load_gen_model(tmp / f"frozen_{method}" / "model.pt").state_dict()
        assert torch.equal(s["encoder.0.head.weight"], init["encoder.0.head.weight"]) == frozen
        assert not torch.equal(s["decoder.0.head.weight"], init["decoder.0.head.weight"])


def test_a_killed_distillation_resumes_to_the_same_student(trained, monkeypatch):
    """The noise is drawn from torch's generator, which the checkpoint keeps: a job killed after
    epoch 2 and rerun ends with the weights of one that ran straight through."""
    tmp, ref, _ = trained
    method = MethodRef("kd4dgm", {"lam": 0.1, "lr": None})
    straight = _train(tmp, ref, STUDENT, epochs=4, teacher=_teacher(tmp), method=method, name="straight")

    class Killed(Exception):
        pass

    class KillAfter2(jobs.ProgressBar):
        def on_epoch_end(self, epoch, metrics):
            super().on_epoch_end(epoch, metrics)
            if epoch == 2:
                raise Killed

    monkeypatch.setattr(jobs, "ProgressBar", KillAfter2)
    with pytest.raises(Killed):
        _train(tmp, ref, STUDENT, epochs=4, teacher=_teacher(tmp), method=method, name="resumed")
    monkeypatch.undo()
    assert (tmp / "resumed" / "checkpoint.pt").exists() and not (tmp / "resumed" / "model.pt").exists()
    resumed = _train(tmp, ref, STUDENT, epochs=4, teacher=_teacher(tmp), method=method, name="resumed")
    assert resumed["model_sha256"] == straight["model_sha256"]


def test_a_method_lr_overrides_the_train_lr(trained):
    tmp, ref, _ = trained
    low = MethodRef("kd4dgm", {"lam": 0.1, "lr": 1e-6})
    meta = _train(tmp, ref, STUDENT, epochs=1, teacher=_teacher(tmp), method=low, name="low_lr")
    history = pd.read_parquet(tmp / "low_lr" / "history.parquet")
    assert history.lr.iloc[0] == pytest.approx(1e-6)
    assert meta["hp"]["lr"] == 1e-6


def test_evaluation_scores_the_model_on_the_test_split(trained):
    tmp, ref, meta = trained
    gen = jobs.GenSettings(importance_samples=50, proposal_steps=20, samples=60)
    jobs.fd_classifier(data=ref, out=tmp / "clf.pt", epochs=2)
    out, samples = tmp / "teacher" / "test_metrics.json", tmp / "teacher" / "samples.npy"
    row = jobs.evaluate(
        data=ref,
        model_file=tmp / "teacher" / "model.pt",
        fit_json=tmp / "teacher" / "fit.json",
        gen=gen,
        out=out,
        samples_out=samples,
        tracking=OFF,
        classifier=tmp / "clf.pt",
    )
    assert read_json(out) == json.loads(json.dumps(row))
    assert row["n_test"] == 100 and row["model"] == "teacher" and row["method"] == "scratch"
    for k in ("test_nll", "ess_median", "mmd2", "fd_clf"):
        assert math.isfinite(row[k]), k
    assert 1 <= row["ess_median"] <= 50
    assert np.load(samples).shape == (60, 40)
    # the estimate is reproducible (seeded by the model's seed); without a classifier no FD
    again = jobs.evaluate(
        data=ref,
        model_file=tmp / "teacher" / "model.pt",
        fit_json=tmp / "teacher" / "fit.json",
        gen=gen,
        out=tmp / "again.json",
        samples_out=tmp / "again.npy",
        tracking=OFF,
    )
    assert again["test_nll"] == row["test_nll"] and math.isnan(again["fd_clf"])


def test_the_nll_is_scored_on_the_first_test_examples_when_asked(trained):
    tmp, ref, _ = trained
    gen = jobs.GenSettings(importance_samples=10, proposal_steps=5, samples=30, test_examples=25)
    row = jobs.evaluate(
        data=ref,
        model_file=tmp / "teacher" / "model.pt",
        fit_json=tmp / "teacher" / "fit.json",
        gen=gen,
        out=tmp / "sub.json",
        samples_out=tmp / "sub.npy",
        tracking=OFF,
    )
    assert row["n_test"] == 25


def _config(**over) -> dict:
    cfg = {
        "task": "generative",
        "models": {"t": TEACHER, "a": {**STUDENT, "hidden": 16}, "s": STUDENT},
        "pairs": [{"teacher": "t", "student": "s"}, {"teacher": "t", "assistants": ["a"], "student": "s"}],
        "methods": [
            "kd4dgm",
            {"method": "kd4dgm", "name": "kd4dgm_lr", "search": {"lr": {"low": 1e-4, "high": 1e-2}}},
            {"method": "teacher_forced", "params": {"lam": 0.5}},
            "sample_elbo",
        ],
        **over,
    }
    return check_config(cfg)


def test_what_a_generative_row_tunes():
    cfg = _config()
    assert plan.tuned(cfg, "kd4dgm", "t__s") == ["lam"]
    assert plan.tuned(cfg, "kd4dgm_lr", "t__a__s") == ["lam", "lr"]
    assert plan.tuned(cfg, "teacher_forced", "t__s") == []  # lam fixed in params
    assert plan.tuned(cfg, "sample_elbo", "t__s") == []
    space = smk.gen_search_space(cfg, "kd4dgm_lr", "t__s")
    assert space == {"lam": Range(1e-3, 10.0, True), "lr": Range(1e-4, 1e-2, True)}
    off = _config(tuning={"enabled": False})
    assert plan.tuned(off, "kd4dgm", "t__s") == []


def test_a_row_resolves_the_family_defaults_then_its_params_then_its_tuned_values(tmp_path):
    cfg = _config(method_params={"kd4dgm": {"lr": 0.002}})
    assert smk.gen_method_ref(cfg, "teacher_forced", "lvae").hp == {"lam": 0.5, "lr": None}
    assert smk.gen_method_ref(cfg, "kd4dgm", "lvae").hp == {"lam": 0.1, "lr": 0.002}
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"params": {"lam": 0.37}}))
    assert smk.gen_method_ref(cfg, "kd4dgm", "lvae", str(best)).hp == {"lam": 0.37, "lr": 0.002}


def test_a_study_tunes_lam_on_the_validation_nll(trained):
    """Three trials through the real study jobs: each value is minus a trial's validation NLL, the
    one tune.trial_value gives for the trial's lam, and the best is the lowest."""
    tmp, ref, _ = trained
    info = JobInfo("tune_worker", "s", "student", "kd4dgm", 0, "teacher__s", lineage="teacher__s")
    study = tune.GenStudy(
        data=ref,
        spec=STUDENT,
        cfg=TrainConfig(epochs=1, lr=3e-3, seed=0),
        gen=jobs.GenSettings(tune_importance_samples=10, tune_proposal_steps=5),
        info=info,
        teacher=_teacher(tmp),
        method=MethodRef("kd4dgm", {"lam": 0.1, "lr": None}),
        space={"lam": Range(1e-3, 10.0, True)},
        n_trials=3,
        journal=tmp / "tune" / "study.journal",
        tracking=OFF,
    )
    tune.start_tuning(study, tmp / "tune" / "run.json")
    tune.tune_worker(study, tmp / "tune" / "run.json", worker=0, n_workers=1, out=tmp / "tune" / "w0.json")
    best = tune.select_best(
        study, tmp / "tune" / "run.json", tmp / "tune" / "best.json", tmp / "tune" / "trials.parquet"
    )
    trials = pd.read_parquet(tmp / "tune" / "trials.parquet")
    assert len(trials) == 3 and set(trials.state) == {"COMPLETE"}
    assert best["val_nll"] == pytest.approx(trials.val_nll.min())
    lam = trials.lam.iloc[0]
    splits = jobs.load_inputs(ref, "train", "val")
    teacher = jobs.load_gen_model(_teacher(tmp).model).requires_grad_(False)
    assert tune.trial_value(study, {"lam": lam}, splits, teacher) == pytest.approx(trials.val_nll.iloc[0])


def _metric(tmp: Path, model, method, lineage, seed, nll, **extra) -> Path:
    d = tmp / f"{method}_{lineage}_{seed}"
    d.mkdir()
    row = {
        "model": model,
        "method": method,
        "lineage": lineage,
        "seed": seed,
        "test_nll": nll,
        "ess_median": 5.0,
        "ess_below_10": 0.5,
        "mmd2": 0.1,
        "fd_clf": 2.0,
        "num_params": 10,
        "n_test": 100,
        "nll_estimator": "importance sampling, K=9",
        **extra,
    }
    (d / "test_metrics.json").write_text(json.dumps(row))
    np.save(d / "samples.npy", np.zeros((16, 40), np.float32))
    return d / "test_metrics.json"


def test_the_report_table_by_hand(tmp_path):
    files = []
    for seed, (t, s, kd, out) in enumerate([(90.0, 100.0, 98.0, 99.0), (92.0, 104.0, 97.0, 99.5)]):
        files += [
            _metric(tmp_path, "t", "scratch", "t", seed, t),
            _metric(tmp_path, "s", "scratch", "s", seed, s),
            _metric(tmp_path, "s", "kd4dgm", "t__s", seed, kd),
            _metric(tmp_path, "s", "kd4dgm_output", "t__s", seed, out),
        ]
    md, grid = tmp_path / "report.md", tmp_path / "plots" / "samples_0.png"
    trials = tmp_path / "tune" / "kd4dgm" / "t__s" / "trials.parquet"
    trials.parent.mkdir(parents=True)
    pd.DataFrame(
        {"trial": [0, 1], "state": ["COMPLETE", "COMPLETE"], "lam": [0.1, 3.0], "val_nll": [101.5, 100.2]}
    ).to_parquet(trials)
    table = write_generative_report(
        metric_files=files,
        trial_files=[trials],
        pairs=["t__s"],
        methods=["kd4dgm", "kd4dgm_output"],
        summary=tmp_path / "summary.parquet",
        markdown=md,
        nll_plot=tmp_path / "plots" / "nll.png",
        grid_plots=[grid],
        experiment="x",
        tracking=OFF,
        dataset="mnist1d",
    )
    text = md.read_text()
    assert "| teacher | 91.00 ± 1.41 |" in text
    assert "| student (real data) | 102.00 ± 2.83 |" in text
    assert "| kd4dgm | **97.50 ± 0.71** |" in text  # the lowest method is bold
    assert "| kd4dgm_output | 99.25 ± 0.35 |" in text
    # paired by seed: +1.0 and +2.5, mean 1.75; half-width t(0.975, 1) * std / sqrt(2)
    # = 12.706 * 1.0607 / 1.4142
    assert "| kd4dgm_output | +1.75 [-7.78, +11.28] (n=2) |" in text
    # against the real-data student: -2.0 and -7.0, mean -4.5, std 3.5355; 12.706 * 3.5355 / 1.4142 = 31.77
    assert "| kd4dgm | -4.50 [-36.27, +27.27] (n=2) |" in text
    assert "| kd4dgm | t → s | 2 / 0 / 0 | lam=3 | 100.20 |" in text  # the lowest validation NLL
    assert grid.exists() and table.set_index("row").loc["kd4dgm", "n_seeds"] == 2


def test_a_convolutional_ladder_vae_through_the_jobs_on_digits(tmp_path):
    """Images: a convolutional teacher trained alone, a convolutional student distilled from it
    without data, both evaluated (digits normalised per channel by the training split)."""
    raw = data.load_digits(None, 42)
    path = tmp_path / "digits.npz"
    data.save_raw(data.RawData(raw.x_train[:200], raw.y_train[:200], raw.x_test[:60], raw.y_test[:60]), path)
    ref = DataRef(path)
    conv = {"family": "lvae", "hidden": 32, "layers": 2, "latent": 4, "channels": 4}
    teacher = _train(tmp_path, ref, conv, epochs=2, name="teacher")
    method = MethodRef("kd4dgm", {"lam": 0.1, "lr": None})
    _train(
        tmp_path, ref, {**conv, "hidden": 8}, epochs=1, teacher=_teacher(tmp_path), method=method, name="s"
    )
    gen = jobs.GenSettings(importance_samples=10, proposal_steps=5, samples=20)
    for name in ("teacher", "s"):
        row = jobs.evaluate(
            data=ref,
            model_file=tmp_path / name / "model.pt",
            fit_json=tmp_path / name / "fit.json",
            gen=gen,
            out=tmp_path / name / "test_metrics.json",
            samples_out=tmp_path / name / "samples.npy",
            tracking=OFF,
        )
        assert math.isfinite(row["test_nll"]) and np.load(tmp_path / name / "samples.npy").shape == (
            20,
            1,
            8,
            8,
        )
    assert teacher["spec"]["channels"] == 4


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"family": "lvae"}, (40,)),
        ({"family": "lvae", "layers": 2, "latent": [6, 3]}, (40,)),
        ({"family": "lvae", "channels": 4, "latent": 5}, (1, 8, 8)),
        ({"family": "hm"}, (2,)),
        ({"family": "vrnn", "latent": 3}, (40,)),
    ],
)
def test_the_torch_free_registry_agrees_with_the_models(spec, shape):
    """kdflow.registry repeats the generative families, their latent shapes and their methods
    without torch (config validation); here they are checked against the built models."""
    from kdflow.registry import GEN_FAMILIES, GEN_METHODS, latent_shapes

    assert set(GEN_FAMILIES) == set(FAMILIES)
    model = FAMILIES[spec["family"]].build(spec, shape)
    if spec["family"] == "lvae":
        assert latent_shapes(spec, shape) == model.latent_shapes()
    elif spec["family"] == "hm":
        assert latent_shapes(spec, shape) == [
            tuple(v.shape[1:]) for k, v in model.draw_noise(1).items() if k[0] == "z"
        ]
    else:
        assert latent_shapes(spec, shape) == [tuple(model.draw_eps(1, shape[0]).shape[1:])]
    for method, info in GEN_METHODS.items():
        for family in info.params:
            assert method in FAMILIES[family].distill, (method, family)
