from kdflow import plan
from kdflow.config import check_config

MODELS = {n: {"family": "mlp", "hidden": [4]} for n in ["t", "s", "a1", "a2", "a3", "t2"]}


def cfg(*pairs, methods=("kd",)):
    return check_config({"models": MODELS, "pairs": list(pairs), "methods": list(methods)})


def test_a_model_distilled_along_the_same_chain_is_trained_once_whatever_pairs_mention_it():
    c = cfg(
        {"teacher": "t", "student": "s"},
        {"teacher": "t", "assistants": ["a1", "a2"], "student": "s"},
        {"teacher": "t", "assistants": ["a1"], "student": "s"},
        {"teacher": "t2", "assistants": ["a1"], "student": "s"},
    )
    assert plan.lineages(c) == [
        "t__s", "t__a1", "t__a1__a2", "t__a1__a2__s", "t__a1__s", "t2__a1", "t2__a1__s",
    ]  # fmt: skip
    assert plan.scratch_models(c) == ["t", "s", "t2"]
    assert [p.label for p in plan.pairs(c)][1] == "t → a1 → a2 → s"


def test_a_lineage_names_its_teacher_its_student_and_its_role():
    c = cfg({"teacher": "t", "assistants": ["a1", "a2"], "student": "s"})
    assert plan.teacher_lineage("t__a1__a2") == "t__a1" and plan.teacher_lineage("t__a1") == "t"
    assert plan.student("t__a1__a2") == "a2"
    assert [plan.role(c, x) for x in ("t", "s", "t__a1", "t__a1__a2__s")] == [
        "teacher", "student", "assistant", "student",
    ]  # fmt: skip


def test_method_entries_are_names_or_rows_with_overrides():
    c = cfg(
        {"teacher": "t", "student": "s"},
        methods=["kd", {"method": "kd", "name": "kd_ls", "params": {"logit_std": True}}],
    )
    assert plan.methods(c) == [
        plan.MethodSpec("kd", "kd"),
        plan.MethodSpec("kd_ls", "kd", {"logit_std": True}),
    ]
    assert plan.method_by_name(c, "kd_ls").method == "kd"


def test_snapshot_teachers_are_taken_from_their_models_training_not_trained_again():
    models = {
        **MODELS,
        "t": {"family": "mlp", "hidden": [4], "train": {"epochs": 40}},
        "t_e10": {"snapshot_of": "t", "epoch": 10},
        "t_q": {"snapshot_of": "t", "fraction": 0.25},  # round(0.25 * 40)
        "t_tiny": {"snapshot_of": "t", "fraction": 0.001},  # at least epoch 1
    }
    pairs = [{"teacher": "t_e10", "student": "s"}, {"teacher": "t_q", "student": "s"}]
    c = check_config({"models": models, "pairs": pairs + [{"teacher": "t_tiny", "student": "s"}]})
    assert plan.snapshots(c) == {"t_e10": ("t", 10), "t_q": ("t", 10), "t_tiny": ("t", 1)}
    assert plan.snapshot_epochs(c, "t") == [1, 10] and plan.snapshot_epochs(c, "s") == []
    assert plan.scratch_models(c) == ["t_e10", "s", "t_q", "t_tiny", "t"]  # t: trained, evaluated
    assert plan.trained_models(c) == ["t", "s", "a1", "a2", "a3", "t2"]  # every model with a family
    assert plan.role(c, "t") == "teacher" and plan.architecture(c, "t_q") is models["t"]
