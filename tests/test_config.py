"""Config validation: defaults, and refusals that name the key and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from kdflow.config import SCHEMA_PATH, ConfigError, check_config, load_schema


def valid(**changes):
    cfg = {"results_dir": "results"}
    cfg.update(changes)
    return cfg


def test_empty_config_gets_the_documented_default_experiment():
    cfg = check_config({})
    assert cfg["dataset"]["name"] == "mnist1d"
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["pairs"] == [
        {"teacher": "teacher", "student": "student"},
        {"teacher": "teacher", "assistants": ["assistant"], "student": "student"},
    ]
    assert cfg["methods"] == ["kd"]
    assert cfg["tracking"]["uri"] is None and cfg["dataset"]["root"] is None


def test_shipped_default_config_equals_the_schema_defaults():
    shipped = check_config(yaml.safe_load(Path("config/config.yaml").read_text()))
    assert shipped == check_config({})


def test_every_schema_key_has_a_description_and_a_default():
    schema = load_schema(SCHEMA_PATH)

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{name} has no description"
            if name not in node.get("required", []):  # required keys sit under a defaulted parent
                assert "default" in sub, f"{path}{name} has no default"
            ref = sub.get("$ref", "").split("/")[-1]
            walk(schema["$defs"][ref] if ref else sub, f"{path}{name}.")

    walk(schema, "")
    assert "epochs" in check_config({})["train"]  # reached through the $ref


def test_partial_nested_section_keeps_other_defaults():
    cfg = check_config(valid(train={"epochs": 5}))
    assert cfg["train"]["epochs"] == 5 and cfg["train"]["batch_size"] == 128


# (config change, the key the message must name, a word of what is allowed)
BAD = [
    ({"epochs": 3}, "'epochs' is not allowed", "allowed keys here"),
    ({"train": {"epochs": 0}}, "train.epochs", "minimum"),
    ({"train": {"epochs": "ten"}}, "train.epochs", "integer"),
    ({"train": {"lr": -1}}, "train.lr", "0"),
    ({"train": {"optimizer": "adam"}}, "train.optimizer", "adamw, sgd"),
    ({"train": {"epoch": 3}}, "train.epoch", "epochs"),
    ({"kd": {"alpha": 0.5}}, "'kd' is no longer used", "methods: [{method: kd, params:"),
    ({"teacher": "teacher"}, "'teacher' is no longer used", "pairs: [{teacher:"),
    ({"assistants": []}, "'assistants' is no longer used", "pairs: [{teacher:"),
    ({"methods": [{"method": "kd", "params": {"alpha": -0.5}}]}, "methods[0].params.alpha", ">= 0"),
    (
        {"methods": [{"method": "kd", "params": {"temperature": "hot"}}]},
        "methods[0].params.temperature",
        "number",
    ),
    ({"methods": [{"method": "kd", "params": {"logit_std": 1}}]}, "methods[0].params.logit_std", "bool"),
    ({"methods": [{"method": "kd", "params": {"beta": 1}}]}, "methods[0].params.beta", "temperature, alpha"),
    ({"methods": ["kd", "hinton"]}, "methods[1]", "unknown method 'hinton'; allowed: kd, dkd"),
    ({"methods": [{"method": "kd", "nmae": "x"}]}, "methods[0].nmae", "method, name, params, search"),
    ({"methods": [{"name": "x"}]}, "methods[0]", "required"),
    ({"methods": ["kd", "kd"]}, "methods[1]", "its own `name`"),
    ({"methods": [{"method": "kd", "name": "scratch"}]}, "methods[0].name", "reserved"),
    ({"methods": [{"method": "kd", "name": "a__b"}]}, "methods[0].name", "single underscores"),
    ({"methods": []}, "methods", "non-empty"),
    ({"methods": [{"method": "kd", "pairs": [2]}]}, "methods[0].pairs", "0 to 1"),
    ({"methods": [{"method": "kd", "pairs": []}]}, "methods[0].pairs", "leave it out"),
    ({"methods": ["fsp"]}, "methods[0]", "equal channel counts"),
    (
        {"methods": [{"method": "kd", "search": {"beta": {"low": 1, "high": 2}}}]},
        "methods[0].search.beta",
        "tunable",
    ),
    (
        {"methods": [{"method": "kd", "search": {"temperature": {"low": 10, "high": 2}}}]},
        "methods[0].search.temperature",
        "must not exceed",
    ),
    (
        {"methods": [{"method": "kd", "search": {"alpha": {"low": 0}}}]},
        "methods[0].search.alpha",
        "{low: <number>, high: <number>}",
    ),
    (
        {"methods": [{"method": "kd", "params": {"alpha": 0.5}, "search": {"alpha": {"low": 0, "high": 1}}}]},
        "methods[0].search.alpha",
        "fixed in params",
    ),
    (
        {"models": {"teacher": {"family": "mlp"}}, "methods": ["at"]},
        "methods[0]",
        "families with maps: cnn1d",
    ),
    (
        {"methods": [{"method": "fitnets", "params": {"student_layer": "block9"}}]},
        "methods[0].params.student_layer",
        "allowed: block1",
    ),
    (
        {"methods": [{"method": "sp", "params": {"teacher_layer": "conv"}}]},
        "methods[0].params.teacher_layer",
        "allowed: block1",
    ),
    ({"seeds": []}, "seeds", "non-empty"),
    ({"seeds": [0, 0]}, "seeds", "non-unique"),
    ({"seeds": [-1]}, "seeds[0]", "minimum"),
    ({"dataset": {"name": "imagenet"}}, "dataset.name", "mnist1d, digits, mnist, fashion_mnist, cifar10"),
    ({"dataset": {"val_fraction": 1.0}}, "dataset.val_fraction", "maximum"),
    ({"dataset": {"name": "cifar10"}}, "dataset.root", "never downloads"),
    ({"dataset": {"name": "mnist", "root": "/nonexistent/x"}}, "dataset.root", "does not exist"),
    ({"models": {"teacher": {"family": "transformer"}}}, "models.teacher.family", "mlp, cnn1d, cnn2d"),
    ({"models": {"teacher": {"channels": 4}}}, "models.teacher", "family"),
    ({"models": {"teacher": {"family": "mlp", "channels": 4}}}, "models.teacher.channels", "hidden, dropout"),
    ({"models": {"t__x": {"family": "mlp"}}}, "models", "'__'"),
    (
        {"pairs": [{"teacher": "teacher", "assistants": ["ghost"], "student": "student"}]},
        "pairs[0].assistants[0]",
        "not defined under 'models'",
    ),
    (
        {"pairs": [{"teacher": "ghost", "student": "student"}]},
        "pairs[0].teacher",
        "not defined under 'models'",
    ),
    ({"pairs": [{"teacher": "teacher", "student": "teacher"}]}, "pairs[0].student", "distinct"),
    (
        {
            "pairs": [
                {"teacher": "teacher", "student": "student"},
                {"teacher": "teacher", "student": "student"},
            ]
        },
        "pairs[1]",
        "each pair once",
    ),
    ({"pairs": [{"teacher": "teacher"}]}, "pairs[0]", "'student' is a required property"),
    ({"pairs": []}, "pairs", "non-empty"),
    ({"tuning": {"n_trials": 0}}, "tuning.n_trials", "minimum"),
    ({"tuning": {"temperature": {"low": 1, "high": 2}}}, "'tuning.temperature' is no longer used", "search:"),
    ({"tuning": {"pruner": {"warmup": 3}}}, "tuning.pruner.warmup", "warmup_fraction"),
    ({"tracking": {"uri": "mysql://x"}}, "tracking.uri", "sqlite"),
    ({"experiment": "has space"}, "experiment", "does not match"),
    ({"models": {"teacher": {"family": "cnn2d"}}}, "models.teacher.family", "1-D"),
    ({"models": {"teacher": {"family": "cnn1d", "kernel": 4}}}, "models.teacher.kernel", "odd"),
]


@pytest.mark.parametrize("change,key,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_config_is_refused_naming_key_and_what_is_allowed(change, key, allowed):
    base = check_config({})
    cfg = copy.deepcopy(change)
    if "models" in change and change["models"] and "teacher" in change["models"]:
        cfg["models"] = {**base["models"], **change["models"]}
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert key in str(err.value)
    assert allowed in str(err.value)


def test_unwritable_results_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    with pytest.raises(ConfigError, match="results_dir"):
        check_config({"results_dir": str(locked / "r")})


def test_a_recipe_sits_beneath_the_config_and_its_method_and_family_defaults_reach_the_rows():
    cfg = check_config(
        {
            "recipe": "repdistiller_cifar100",
            "dataset": {"name": "digits"},
            "models": {
                "t": {"family": "resnet8"},
                "s": {"family": "mobilenetv2"},
                "s2": {"family": "shufflev1", "train": {"lr": 0.02}},
            },
            "pairs": [{"teacher": "t", "student": "s"}, {"teacher": "t", "student": "s2"}],
            "methods": [
                "kd",
                {"method": "kd", "name": "kd_t2", "params": {"temperature": 2}},
                {"method": "kd", "name": "kd_tuned", "search": {"alpha": {"low": 0, "high": 1}}},
                "fitnets",
            ],
            "train": {"epochs": 240, "batch_size": 128},  # the config's own values win
        }
    )
    train = cfg["train"]
    assert (train["lr"], train["batch_size"], train["optimizer"], train["nesterov"]) == (
        0.05,
        128,
        "sgd",
        False,
    )
    assert train["milestones"] == [150, 180, 210] and train["augment"] == {"crop": 4, "flip": True}
    assert cfg["tuning"]["enabled"] is False
    assert "train" not in cfg["models"]["t"]  # resnet8 keeps the shared rate
    assert cfg["models"]["s"]["train"] == {"lr": 0.01}  # the recipe's rate for MobileNetV2
    assert cfg["models"]["s2"]["train"] == {"lr": 0.02}  # a model's own block wins over its family's
    kd, kd_t2, kd_tuned, fitnets = cfg["methods"]
    assert kd == {"method": "kd", "params": {"temperature": 4, "alpha": 0.9}}
    assert kd_t2["params"] == {"temperature": 2, "alpha": 0.9}  # a row's own value wins
    assert kd_tuned["params"] == {"temperature": 4} and "alpha" in kd_tuned["search"]  # searched stays tuned
    assert fitnets == "fitnets"  # the recipe sets nothing for it


def test_a_recipe_can_be_a_path_and_its_keys_are_validated_like_the_configs(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("train: {epochs: 7, lr: 0.5}\n")
    assert check_config({"recipe": str(recipe)})["train"]["epochs"] == 7
    recipe.write_text("train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="'train.epochs'"):
        check_config({"recipe": str(recipe)})
