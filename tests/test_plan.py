from kdflow import plan
from kdflow.config import check_config


def cfg(assistants):
    models = {n: {"family": "mlp", "hidden": [4]} for n in ["t", "s", "a1", "a2", "a3"]}
    return check_config({"models": models, "teacher": "t", "student": "s", "assistants": assistants})


def names(edges):
    return [e.name for e in edges]


def test_edges_for_chains_of_any_length():
    assert names(plan.edges(cfg([]))) == ["t__s"]
    assert names(plan.edges(cfg(["a1"]))) == ["t__a1", "t__s", "a1__s"]
    assert names(plan.edges(cfg(["a1", "a2", "a3"]))) == ["t__a1", "a1__a2", "a2__a3", "t__s", "a3__s"]


def test_roles_methods_and_sources():
    c = cfg(["a1", "a2"])
    assert plan.teacher_of(c, "t") is None
    assert plan.teacher_of(c, "a1") == "t" and plan.teacher_of(c, "a2") == "a1"
    assert [plan.role(c, m) for m in ("t", "a1", "s")] == ["teacher", "assistant", "student"]
    assert plan.method(c, None, "s") == "scratch"
    assert plan.method(c, "t", "s") == "kd"
    assert plan.method(c, "a2", "s") == "takd"
    assert plan.method(c, "a1", "a2") == "kd"
