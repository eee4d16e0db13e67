"""The teacher variants of the KD survey (#14): ensembles combined as the papers do, checked
against computations written out here, and the variants end to end through the real workflow."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import all_runs, ok, snakemake

from kdflow.engine import predict_logits
from kdflow.models import build_model, count_parameters
from kdflow.models.ensemble import combine_logits, oracle_choice

MEMBER = {"family": "cnn1d", "channels": 4, "layers": 2}


def log_softmax(z):
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_combination_rules_by_hand():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 4)) * 2  # 3 members, 5 samples, 4 classes
    y = np.array([0, 3, 1, 2, 2])
    mean_p = np.exp(log_softmax(z)).mean(0)
    got = combine_logits(torch.tensor(z), "prob").numpy()
    np.testing.assert_allclose(np.exp(log_softmax(got)), mean_p, rtol=1e-6)  # softmax = mean prob
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-6)  # and they are log-probabilities
    np.testing.assert_allclose(combine_logits(torch.tensor(z), "logit").numpy(), z.mean(0), rtol=1e-12)
    ce = -log_softmax(z)[:, np.arange(5), y]  # (members, samples)
    want = [int(np.argmin(ce[:, i])) for i in range(5)]
    assert oracle_choice(torch.tensor(z), torch.tensor(y)).tolist() == want
    with pytest.raises(ValueError, match="needs the labels"):
        combine_logits(torch.tensor(z), "oracle")


def members(n, spec=MEMBER):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(spec, (40,), 10).eval())
    return out


def ensemble_of(trained, combine, specs=None):
    specs = specs or [MEMBER] * len(trained)
    model = build_model({"family": "ensemble", "members": specs, "combine": combine}, (40,), 10)
    for slot, m in zip(model.members, trained):
        slot.load_state_dict(m.state_dict())
    return model.eval()


def test_an_ensemble_is_its_members_combined_with_their_mean_features_and_their_parameters():
    trained = members(3)
    ens = ensemble_of(trained, "prob")
    x = torch.randn(6, 40)
    with torch.no_grad():
        outs = [m.forward_features(x) for m in trained]
        logits, feats = ens.forward_features(x)
    want = torch.logsumexp(torch.stack([o[0].log_softmax(-1) for o in outs]), 0) - np.log(3)
    torch.testing.assert_close(logits, want)
    torch.testing.assert_close(feats["block2"], torch.stack([o[1]["block2"] for o in outs]).mean(0))
    assert count_parameters(ens) == 3 * count_parameters(trained[0])
    mixed = ensemble_of(
        [trained[0], *members(1, {"family": "mlp", "hidden": [8]})],
        "logit",
        [MEMBER, {"family": "mlp", "hidden": [8]}],
    )
    assert mixed.forward_features(x)[1] == {}  # different architectures: logits only


def test_an_oracle_ensemble_needs_the_labels_and_picks_the_best_member_per_sample():
    trained = members(2)
    ens = ensemble_of(trained, "oracle")
    x, y = torch.randn(7, 40), torch.randint(0, 10, (7,))
    with pytest.raises(ValueError, match="need y"):
        predict_logits(ens, x)
    got = predict_logits(ens, x, y)
    with torch.no_grad():
        z = torch.stack([m(x) for m in trained])
    for i in range(7):
        ce = [torch.nn.functional.cross_entropy(z[m, i : i + 1], y[i : i + 1]).item() for m in range(2)]
        torch.testing.assert_close(got[i], z[int(np.argmin(ce)), i])


@pytest.mark.slow
def test_teacher_variants_run_end_to_end(tmp_path):
    """Snapshots, a label-smoothed teacher, ensembles (seeds of one model; an oracle over two
    models) and the noisy teacher through the real workflow, each a column of one report."""
    config = {
        "experiment": "teachers",
        "models": {
            "teacher": {"family": "cnn1d", "channels": 8, "layers": 2, "train": {"epochs": 4}},
            "teacher_ls": {
                "family": "cnn1d",
                "channels": 8,
                "layers": 2,
                "train": {"epochs": 4, "label_smoothing": 0.1},
            },
            "teacher_half": {"snapshot_of": "teacher", "fraction": 0.5},
            "seeds3": {"ensemble": ["teacher"], "seeds": [0, 1, 2]},
            "oracle": {"ensemble": ["teacher", "teacher_ls"], "combine": "oracle"},
            "student": {"family": "cnn1d", "channels": 4, "layers": 2},
        },
        "pairs": [
            {"teacher": t, "student": "student"}
            for t in ("teacher", "teacher_half", "teacher_ls", "seeds3", "oracle")
        ],
        "sweeps": [{"student": "student", "teachers": ["teacher", "teacher_half", "seeds3"]}],  # all declared
        "methods": ["kd", {"method": "noisy", "pairs": [0]}, {"method": "fitnets", "pairs": [3]}],
        "seeds": [0],
        "train": {"epochs": 2},
        "tuning": {"enabled": False},
    }
    ok(snakemake(tmp_path, config, "--cores", "2"))
    results = tmp_path / "results" / "teachers"
    report = (results / "report.md").read_text()
    assert "## Capacity gap" in report and "| teacher_half |" in report.split("## Capacity gap")[1]
    assert (results / "plots" / "capacity_gap_0_student.png").read_bytes().startswith(b"\x89PNG")
    rows = pd.read_parquet(results / "summary.parquet")
    lineages = {f"{t}__student" for t in ("teacher", "teacher_half", "teacher_ls", "seeds3", "oracle")}
    assert set(rows[rows.method == "kd"].lineage) == lineages
    # the snapshot is the weights its teacher's job kept at epoch 2 of 4, not a model trained again
    teacher = json.loads((results / "train" / "teacher" / "seed0" / "fit.json").read_text())
    half = json.loads((results / "train" / "teacher_half" / "seed0" / "fit.json").read_text())
    assert half["model_sha256"] == teacher["snapshots"]["2"]["model_sha256"] and half["best_epoch"] == 2
    assert not (results / "train" / "teacher_half" / "seed0" / "history.parquet").exists()
    ens = json.loads((results / "train" / "seeds3" / "seed0" / "fit.json").read_text())
    assert [(m["model"], m["seed"]) for m in ens["members"]] == [
        ("teacher", 0),
        ("teacher", 1),
        ("teacher", 2),
    ]
    assert ens["num_params"] == 3 * teacher["num_params"]
    oracle = rows[(rows.model == "oracle") & (rows.method == "scratch")].iloc[0]
    assert np.isnan(oracle.throughput)  # an oracle needs the labels: not a deployable model
    runs = {
        (r.data.tags.get("snakemake_rule"), r.data.tags.get("model")): r
        for r in all_runs(tmp_path, "teachers")
    }
    assert runs["train", "teacher_ls"].data.params["label_smoothing"] == "0.1"  # what its training used
    assert runs["train", "teacher"].data.params["label_smoothing"] == "0.0"
    assert runs["snapshot", "teacher_half"].data.tags["snapshot_of_run_id"] == teacher["mlflow_run_id"]
    member_runs = runs["ensemble", "seeds3"].data.tags["member_run_ids"].split(",")
    assert member_runs == [m["mlflow_run_id"] for m in ens["members"]]


# ---------------------------------------------------------------- deep mutual learning


def test_mutual_learning_losses_by_hand():
    from kdflow.methods.dml import mutual_losses

    rng = np.random.default_rng(1)
    z = [rng.normal(size=(5, 4)) for _ in range(3)]
    y = np.array([0, 1, 2, 3, 0])
    got = mutual_losses([torch.tensor(a) for a in z], torch.tensor(y))
    p = [np.exp(log_softmax(a)) for a in z]
    for k in range(3):
        ce = -log_softmax(z[k])[np.arange(5), y].mean()
        kl = np.mean([(p[j] * (np.log(p[j]) - np.log(p[k]))).sum(1).mean() for j in range(3) if j != k])
        assert got[k]["ce"].item() == pytest.approx(ce, rel=1e-6)
        assert got[k]["kl"].item() == pytest.approx(kl, rel=1e-5)


def test_each_network_of_a_cohort_learns_from_its_peers_fixed_predictions(small_splits):
    """The gradient reaching network k is that of its own CE + KL(p_peer || p_k) with the peer's
    prediction a constant; the saved student is network 1 and the teacher is never read."""
    from kdflow.distillation import DistillSetup
    from kdflow.methods import METHODS

    train, _ = small_splits
    method = METHODS["dml"]
    hp = method.resolve()
    logits = torch.full((len(train), 10), float("nan"))  # a teacher it must not read
    setup = DistillSetup.build(method, hp, MEMBER, (40,), 10, None, train, logits)
    d = setup.distiller(hp, 0, len(train))
    assert len(d.extra["peers"]) == 1
    x, y, idx = train.x[:16], train.y[:16], torch.arange(16)
    parts = setup.objective(hp)(d, x, y, idx, 1)
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    got = {n: p.grad.clone() for n, p in d.student.named_parameters()}
    peer = d.extra["peers"][0]
    for m in (d.student, peer):
        m.zero_grad()
    with torch.no_grad():
        target = peer(x).log_softmax(-1)
    z = d.student(x)
    own = torch.nn.functional.cross_entropy(z, y) + torch.nn.functional.kl_div(
        z.log_softmax(-1), target, log_target=True, reduction="batchmean"
    )
    own.backward()
    for n, p in d.student.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)
    student = setup.final_student(d, hp)
    assert count_parameters(student) == count_parameters(build_model(MEMBER, (40,), 10))
