"""The adapters from a validated config to the dataclasses jobs take."""

from kdflow.config import check_config
from kdflow.smk import pruner_config, search_space, train_config


def test_model_train_block_overrides_the_shared_settings():
    cfg = check_config({})
    assert train_config(cfg, 0, "teacher").epochs == 80  # the default teacher's own override
    assert train_config(cfg, 0, "student").epochs == 200
    assert train_config(cfg, 3, "student").seed == 3
    assert train_config(cfg, 0, "teacher").lr == cfg["train"]["lr"]  # not overridden: shared


def test_pruner_warmup_is_a_fraction_of_the_student_epochs():
    cfg = check_config({"tuning": {"pruner": {"warmup_fraction": 0.25}}})
    assert pruner_config(cfg, "student").n_warmup_steps == 50
    assert pruner_config(cfg, "teacher").n_warmup_steps == 20


def test_search_space_from_config():
    cfg = check_config({"tuning": {"temperature": {"low": 2, "high": 8}}})
    space = search_space(cfg)
    assert (space.t_low, space.t_high, space.a_low, space.a_high) == (2, 8, 0.0, 1.0)


def test_model_spec_with_train_block_builds():
    from kdflow.models import build_model

    spec = check_config({})["models"]["teacher"]
    assert "train" in spec
    assert build_model(spec, (40,), 10)(__import__("torch").zeros(2, 40)).shape == (2, 10)
