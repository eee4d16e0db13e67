"""The adapters from a validated config to the dataclasses jobs take."""

from kdflow.config import check_config
from kdflow.pipeline.smk import method_ref, pruner_config, search_space, train_config
from kdflow.tuning import Range


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


def test_search_space_is_the_methods_own_with_the_config_ranges_and_without_fixed_values():
    kd = {"method": "kd", "search": {"temperature": {"low": 2, "high": 8}}}
    dkd = {"method": "dkd", "params": {"temperature": 4.0}}
    cfg = check_config({"methods": [kd, dkd]})
    assert search_space(cfg, "kd") == {"temperature": Range(2.0, 8.0, log=True), "alpha": Range(0.0, 1.0)}
    assert search_space(cfg, "dkd") == {"beta": Range(1.0, 16.0, log=True)}  # T is fixed: not tuned


def test_method_ref_takes_defaults_config_values_then_tuned_values(tmp_path):
    from kdflow.atomic import write_json

    cfg = check_config({"methods": [{"method": "dkd", "name": "dkd6", "params": {"beta": 6.0}}]})
    assert method_ref(cfg, "dkd6").hp["beta"] == 6.0 and method_ref(cfg, "dkd6").hp["warmup"] == 20
    write_json(tmp_path / "best.json", {"params": {"temperature": 2.5}, "val_acc": 0.5})
    ref = method_ref(cfg, "dkd6", str(tmp_path / "best.json"))
    assert ref.method == "dkd" and ref.hp["temperature"] == 2.5 and ref.hp["beta"] == 6.0


def test_model_spec_with_train_block_builds():
    from kdflow.models import build_model

    spec = check_config({})["models"]["teacher"]
    assert "train" in spec
    assert build_model(spec, (40,), 10)(__import__("torch").zeros(2, 40)).shape == (2, 10)
