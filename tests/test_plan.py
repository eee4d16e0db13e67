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
