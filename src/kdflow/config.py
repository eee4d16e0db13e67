"""Config validation: JSON schema, defaults, and the cross-key checks a schema cannot express.

    python -m kdflow.config config/config.yaml   # check a config; exit 1 with the reason

`check_config` fills defaults into the dict it is given and raises `ConfigError` naming the key
(`train.epochs`, `assistants[1]`) and what is allowed. The Snakefile calls it while parsing, so a
bad config stops the run before any job starts and before anything is written.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

from kdflow import dataset_files, plan
from kdflow.registry import (
    DATASET_RANK,
    DATASET_SHAPE,
    FAMILIES,
    GEN_FAMILIES,
    GEN_METHODS,
    GENERATED,
    METHODS,
    REPARAM_FAMILIES,
    VECTOR_BLOCKS,
    block_channels,
    feature_names,
    gen_params,
    input_problem,
)
from kdflow.tracking import redact

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
RECIPES = Path(__file__).resolve().parents[2] / "config" / "recipes"  # `recipe: <name>` -> <name>.yaml


NAME = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    return _resolve(schema, schema["$defs"][ref.split("/")[-1]]) if ref else node


# Keys of the one-pair configs before pairs x methods, and how to write them now.
MOVED = {
    "teacher": "declare pairs: [{teacher: <t>, assistants: [<a>...], student: <s>}] instead",
    "assistants": "declare pairs: [{teacher: <t>, assistants: [<a>...], student: <s>}] instead",
    "student": "declare pairs: [{teacher: <t>, assistants: [<a>...], student: <s>}] instead",
    "kd": "set kd's values with methods: [{method: kd, params: {temperature: 4, alpha: 0.9}}] instead",
    "tuning.temperature": (
        "set a search range with methods: [{method: kd, search: {temperature: {low: 1, high: 20}}}]"
    ),
    "tuning.alpha": "set a search range with methods: [{method: kd, search: {alpha: {low: 0, high: 1}}}]",
}


def _message(err: jsonschema.ValidationError, schema: dict) -> str:
    key = _key(err.absolute_path)
    node = _resolve(schema, err.schema) if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(node.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = f"{key}." if err.absolute_path else ""
        if f"{where}{extra[0]}" in MOVED:
            return f"config key '{where}{extra[0]}' is no longer used: {MOVED[where + extra[0]]}"
        return f"config key '{where}{extra[0]}' is not allowed; allowed keys here: {', '.join(allowed)}"
    if err.validator == "required":
        return f"config key '{key}': {err.message}"
    if err.validator == "propertyNames":
        return (
            f"config key '{key}': name {err.instance!r} is not allowed "
            "(letters, digits and single underscores; '__' separates edge names)"
        )
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return f"config key '{key}': {err.instance!r} is not allowed; allowed: {allowed}"
    desc = node.get("description") or _parent_description(schema, err)
    hint = f" ({desc})" if desc else ""
    return f"config key '{key}': {err.message}{hint}"


def _parent_description(schema: dict, err: jsonschema.ValidationError) -> str:
    node = schema
    for part in err.absolute_path:
        node = _resolve(schema, node)
        props = node.get("properties", {})
        if isinstance(part, str) and part in props:
            node = props[part]
        elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(part, int) and "items" in node:
            node = node["items"]
        else:
            return ""
    return _resolve(schema, node).get("description", "")


def fill_defaults(config: dict, schema: dict, root: dict | None = None) -> None:
    """Set every absent key that has a schema default, recursing into objects."""
    root = root or schema
    schema = _resolve(root, schema)
    for name, sub in schema.get("properties", {}).items():
        for node in (sub, _resolve(root, sub)):  # a default beside a $ref wins
            if name not in config and "default" in node:
                config[name] = copy.deepcopy(node["default"])
        if isinstance(config.get(name), dict):
            fill_defaults(config[name], _resolve(root, sub), root)


def check_config(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate `config` in place (defaults filled); raise ConfigError naming the first bad key."""
    _apply_recipe(config)
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(redact(_message(errors[0], schema)))  # it may quote a URI with a password
    if config.get("sweeps") and "pairs" not in config:
        config["pairs"] = []  # the sweeps are the pairs, not the default ones
    fill_defaults(config, schema)
    _expand_sweeps(config)
    _apply_family_train(config)
    _apply_method_params(config)
    _check_semantics(config)
    return config


def recipe_path(name: str) -> Path:
    """A recipe by name (config/recipes/<name>.yaml) or by its path."""
    return Path(name) if name.endswith((".yaml", ".yml")) else RECIPES / f"{name}.yaml"


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merge key by key, anything else in `over` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _apply_recipe(config: dict) -> None:
    """Put the config's `recipe` beneath it (in place): the recipe's keys are defaults."""
    name = config.get("recipe")
    if not name:
        return
    path = recipe_path(str(name))
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES.glob("*.yaml"))
        raise ConfigError(
            f"config key 'recipe': {name!r} is not a recipe ({path} does not exist); "
            f"allowed: {', '.join(known)}, or a path to a .yaml file"
        )
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict) or "recipe" in recipe:
        raise ConfigError(
            f"config key 'recipe': {path} must be a mapping of config keys, without a recipe of its own"
        )
    merged = _merge(recipe, config)
    config.clear()
    config.update(merged)


def _apply_family_train(c: dict) -> None:
    """`family_train` into each model's own `train:` block, beneath what the model sets itself."""
    families = GEN_FAMILIES if c.get("task") == "generative" else FAMILIES
    for family, settings in c["family_train"].items():
        if family not in families:
            raise ConfigError(
                f"config key 'family_train.{family}': not a model family; allowed: {', '.join(families)}"
            )
        for spec in c["models"].values():
            if spec.get("family") == family:
                spec["train"] = {**settings, **spec.get("train", {})}


def _apply_method_params(c: dict) -> None:
    """`method_params` into each row of its method, beneath the row's own params and searches."""
    defaults = c["method_params"]
    generative = c.get("task") == "generative"
    known = GEN_METHODS if generative else METHODS
    for method, values in defaults.items():
        if method not in known:
            raise ConfigError(
                f"config key 'method_params.{method}': unknown method; allowed: {', '.join(known)}"
            )
        params = gen_params(method) if generative else METHODS[method].params
        for p in values:
            if p not in params:
                raise ConfigError(
                    f"config key 'method_params.{method}.{p}': not a hyperparameter of {method!r}; "
                    f"allowed: {', '.join(params)}"
                )
    for i, entry in enumerate(c["methods"]):
        name = entry if isinstance(entry, str) else entry.get("method")
        if name not in defaults:
            continue
        entry = {"method": entry} if isinstance(entry, str) else dict(entry)
        own, searched = entry.get("params", {}), entry.get("search", {})
        if isinstance(own, dict) and isinstance(searched, dict):
            inherited = {k: v for k, v in defaults[name].items() if k not in own and k not in searched}
            entry["params"] = {**inherited, **own}
        c["methods"][i] = entry


def _expand_sweeps(c: dict) -> None:
    """Each sweep's {teacher, student} pairs, appended to `pairs` where not already there."""
    models = c["models"]
    for i, sweep in enumerate(c["sweeps"]):
        for key, name in [("student", sweep["student"])] + [
            (f"teachers[{j}]", t) for j, t in enumerate(sweep["teachers"])
        ]:
            if name not in models:
                raise ConfigError(
                    f"config key 'sweeps[{i}].{key}': model {name!r} is not defined under 'models' "
                    f"(defined: {', '.join(sorted(models))})"
                )
        declared = [(p["teacher"], *p.get("assistants", []), p["student"]) for p in c["pairs"]]
        for t in sweep["teachers"]:
            if (t, sweep["student"]) not in declared:
                c["pairs"].append({"teacher": t, "student": sweep["student"]})


def _check_semantics(c: dict) -> None:
    if c["task"] == "generative":
        from kdflow.generative_config import check_generative  # it imports ConfigError from here

        _check_pairs(c)
        _check_dataset(c)  # before the shapes, which npz and imagefolder read from the files
        check_generative(c)
    else:
        _check_classify(c)
    _check_common(c)


def _check_dataset(c: dict) -> None:
    """A dataset read from disk has its files under its root; only imagefolder takes a size."""
    ds = c["dataset"]
    if ds["name"] not in GENERATED:
        if not ds["root"]:
            raise ConfigError(
                f"config key 'dataset.root': dataset {ds['name']!r} is read from disk and needs a root "
                "directory (kdflow never downloads data)"
            )
        if not Path(ds["root"]).is_dir():
            raise ConfigError(f"config key 'dataset.root': directory {ds['root']!r} does not exist")
        absent = dataset_files.missing(Path(ds["root"]), ds["name"])
        if absent:
            how = dataset_files.HOW_TO_GET[ds["name"]].replace("<root>", ds["root"])
            raise ConfigError(
                f"config key 'dataset.root': {ds['root']!r} lacks the files of dataset {ds['name']!r}: "
                f"{', '.join(absent)}; on a machine with internet: {how}"
            )
        if ds["name"] == "npz":
            try:
                dataset_files.check_npz(Path(ds["root"]))
            except ValueError as e:
                raise ConfigError(f"config key 'dataset.root': {e}") from e
    if ds["name"] == "imagefolder" and ds["image_size"] is None:
        raise ConfigError(
            "config key 'dataset.image_size': imagefolder needs [height, width] (images are resized once)"
        )
    if ds["name"] != "imagefolder" and ds["image_size"] is not None:
        raise ConfigError(
            f"config key 'dataset.image_size': only imagefolder resizes its images; {ds['name']!r} "
            "has its own size"
        )


def _check_classify(c: dict) -> None:
    from kdflow.generative_config import refuse_generative

    refuse_generative(c)
    _check_snapshots(c)
    _check_ensembles(c)
    _check_pairs(c)
    check_methods(c)
    _check_dataset(c)
    models = c["models"]
    rank = DATASET_RANK[c["dataset"]["name"]]
    _check_train_blocks(c, rank)
    _check_published(c)
    for name, spec in models.items():
        if "snapshot_of" in spec or "ensemble" in spec:
            continue  # made of other models, checked as those
        family = spec["family"]
        family_rank, allowed = FAMILIES[family]
        for knob in spec:
            if knob not in ("family", "train") and knob not in allowed:
                if not allowed:  # a zoo architecture
                    raise ConfigError(
                        f"config key 'models.{name}.{knob}': not a knob of family {family!r}, a fixed "
                        "architecture of the CIFAR zoo that takes none; allowed: family and train only "
                        "(another size is another zoo name, or family resnet with depth and width)"
                    )
                raise ConfigError(
                    f"config key 'models.{name}.{knob}': not a knob of family {family!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        if family_rank not in (None, rank):
            raise ConfigError(
                f"config key 'models.{name}.family': {family!r} does not take the {rank}-D inputs "
                f"of dataset {c['dataset']['name']!r}"
            )
        if problem := input_problem(spec, input_shape(c["dataset"])):
            raise ConfigError(
                f"config key 'models.{name}.family': {problem} (dataset {c['dataset']['name']!r}); "
                "choose a family that downsamples less, or fewer layers"
            )
        if family == "resnet" and (spec.get("depth", 20) - 2) % 6:
            raise ConfigError(
                f"config key 'models.{name}.depth': must be 6n+2 (8, 20, 56, 110), got {spec['depth']}"
            )
        if family == "cnn1d" and spec.get("kernel", 5) % 2 == 0:
            raise ConfigError(f"config key 'models.{name}.kernel': must be odd, got {spec['kernel']}")
        if family in ("transformer1d", "vit"):
            _check_transformer(name, spec, c["dataset"]["name"], input_shape(c["dataset"]))


def _check_common(c: dict) -> None:
    """What every task's config must satisfy: tuning workers, the tracking URI, a writable results tree."""
    t = c["tuning"]
    if t["workers"] > t["n_trials"]:
        raise ConfigError(
            f"config key 'tuning.workers': {t['workers']} workers for {t['n_trials']} trials "
            "(tuning.n_trials) would leave some with nothing to do; allowed: 1 to tuning.n_trials"
        )

    if c["tracking"]["uri"]:
        _check_tracking_uri(c["tracking"]["uri"])

    results = Path(c["results_dir"]).resolve()
    existing = next(p for p in [results, *results.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"config key 'results_dir': {str(results)!r} is not writable (checked {existing})")


def _check_train_blocks(c: dict, rank: int) -> None:
    """Per model, what its train settings (shared, family, own) say together: augmentation on
    images only, milestones within the epochs, a warm-up shorter than training."""
    for name in plan.trained_models(c):
        own = c["models"][name].get("train", {})
        settings = plan.train_settings(c, name)

        def key(k: str, name=name, own=own) -> str:
            return f"models.{name}.train.{k}" if k in own else f"train.{k}"

        augment = settings.get("augment", {})
        if (augment.get("crop", 0) or augment.get("flip", False)) and rank != 3:
            raise ConfigError(
                f"config key '{key('augment')}': augmentation crops and flips images, and dataset "
                f"{c['dataset']['name']!r} has 1-D inputs; allowed here: {{}} (none)"
            )
        epochs, milestones = settings["epochs"], settings.get("milestones", [])
        if settings["scheduler"] == "multistep" and not milestones:
            raise ConfigError(
                f"config key '{key('milestones')}': scheduler multistep needs milestones (epochs)"
            )
        if settings["scheduler"] != "multistep" and milestones:
            raise ConfigError(
                f"config key '{key('milestones')}': only scheduler multistep reads milestones; "
                f"it is {settings['scheduler']!r}"
            )
        late = [m for m in milestones if m >= epochs]
        if late:
            raise ConfigError(
                f"config key '{key('milestones')}': {late} are not before the last of {epochs} epochs "
                f"(model {name!r}); allowed: 1 to {epochs - 1}"
            )
        if settings.get("warmup_epochs", 0) >= epochs:
            raise ConfigError(
                f"config key '{key('warmup_epochs')}': {settings['warmup_epochs']} warm-up epochs of "
                f"{epochs} (model {name!r}); allowed: 0 to {epochs - 1}"
            )


def _check_published(c: dict) -> None:
    """Published numbers name rows the report has: teacher, student, or a method row."""
    rows = ["teacher", "student", *(plan.method_spec(e).name for e in c["methods"])]
    places = [(f"pairs[{i}].published", p.get("published", {})) for i, p in enumerate(c["pairs"])]
    places.append(("published.sources", c["published"]["sources"]))
    for where, values in places:
        for row in values:
            if row not in rows:
                raise ConfigError(
                    f"config key '{where}.{row}': not a row of this experiment; allowed: {', '.join(rows)}"
                )


def input_shape(ds: dict) -> tuple[int, ...]:
    """The shape of one input of the `dataset` section (without torch; for npz from the files)."""
    if ds["name"] == "npz":
        return dataset_files.npz_image_shape(Path(ds["root"]))
    if ds["name"] == "imagefolder":
        return (3, *ds["image_size"])
    return DATASET_SHAPE[ds["name"]]


def _check_transformer(name: str, spec: dict, dataset: str, shape: tuple[int, ...]) -> None:
    """What kdflow.models.transformer's constructors refuse (with their defaults), said before any job."""
    sides = shape[-2:] if len(shape) == 3 else shape  # (H, W) of an image, (L,) of a signal
    patch, dim, heads = spec.get("patch", 4), spec.get("dim", 64), spec.get("heads", 4)

    def divisors(n: int) -> str:
        return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)

    if any(n % patch for n in sides):
        raise ConfigError(
            f"config key 'models.{name}.patch': {patch} does not divide the {'x'.join(map(str, sides))} "
            f"inputs of dataset {dataset!r}; allowed: {divisors(math.gcd(*sides))}"
        )
    if dim % heads:
        raise ConfigError(
            f"config key 'models.{name}.heads': {heads} does not divide dim {dim} (models.{name}.dim); "
            f"allowed: {divisors(dim)}"
        )


def _check_snapshots(c: dict) -> None:
    """A snapshot names a model with a family, and one epoch within that model's training."""
    models = c["models"]
    for name, spec in models.items():
        if "snapshot_of" not in spec:
            continue
        parent, key = spec["snapshot_of"], f"models.{name}"
        trained = sorted(n for n, s in models.items() if "family" in s)
        if parent not in models or "family" not in models[parent]:
            raise ConfigError(
                f"config key '{key}.snapshot_of': {parent!r} is not a model trained from its own "
                f"spec; allowed: {', '.join(trained)}"
            )
        if ("epoch" in spec) == ("fraction" in spec):
            raise ConfigError(f"config key '{key}': give exactly one of 'epoch' or 'fraction'")
        total = plan.epochs(c, parent)
        if spec.get("epoch", 0) > total:
            raise ConfigError(
                f"config key '{key}.epoch': {spec['epoch']} is beyond the {total} epochs {parent!r} "
                f"trains for; allowed: 1 to {total}"
            )


def _check_ensembles(c: dict) -> None:
    """An ensemble's members are trained models (or snapshots), two or more in all."""
    models = c["models"]
    single = sorted(n for n, s in models.items() if "ensemble" not in s)
    for name, spec in models.items():
        if "ensemble" not in spec:
            continue
        key = f"models.{name}"
        for j, member in enumerate(spec["ensemble"]):
            if member not in single:
                raise ConfigError(
                    f"config key '{key}.ensemble[{j}]': {member!r} is not a trained model or a snapshot; "
                    f"allowed: {', '.join(single)}"
                )
        n = len(spec["ensemble"]) * len(spec.get("seeds") or [0])
        if n < 2:
            raise ConfigError(
                f"config key '{key}': an ensemble of one ({spec['ensemble'][0]!r} at one seed); give two "
                "or more models in `ensemble`, or several `seeds` of one"
            )


def _check_pairs(c: dict) -> None:
    models = c["models"]
    defined = ", ".join(sorted(models))
    seen: dict[tuple, int] = {}
    for i, pair in enumerate(c["pairs"]):
        chain = [("teacher", pair["teacher"])]
        chain += [(f"assistants[{j}]", n) for j, n in enumerate(pair.get("assistants", []))]
        chain += [("student", pair["student"])]
        used: dict[str, str] = {}
        for key, name in chain:
            if name not in models:
                raise ConfigError(
                    f"config key 'pairs[{i}].{key}': model {name!r} is not defined under 'models' "
                    f"(defined: {defined})"
                )
            if name in used:
                raise ConfigError(
                    f"config key 'pairs[{i}].{key}': model {name!r} is already this pair's "
                    f"'{used[name]}'; a pair's teacher, assistants and student must be distinct models"
                )
            used[name] = key
        names = tuple(n for _, n in chain)
        for key, name in chain[1:]:
            _check_distilled(c, f"pairs[{i}].{key}", name)
        if names in seen:
            raise ConfigError(
                f"config key 'pairs[{i}]': the same pair as pairs[{seen[names]}] "
                f"({plan.ARROW.join(names)}); each pair once"
            )
        seen[names] = i


def _check_distilled(c: dict, where: str, name: str) -> None:
    """A model a pair distils (assistant, student): one with a family, trained by its method's loss."""
    spec = c["models"][name]
    if "snapshot_of" in spec or "ensemble" in spec:
        kind = "a snapshot of another model's training" if "snapshot_of" in spec else "an ensemble"
        raise ConfigError(
            f"config key '{where}': {name!r} is {kind} and can only be a teacher; "
            "distil a model with a family"
        )
    own = spec.get("train", {}).get("label_smoothing")
    if (own if own is not None else c["train"].get("label_smoothing", 0.0)) > 0:
        key = f"models.{name}.train" if own is not None else "train"
        raise ConfigError(
            f"config key '{key}.label_smoothing': model {name!r} is distilled ({where}) and label "
            "smoothing applies to training from labels only; set it on teachers, in their own `train:` block"
        )


def check_methods(c: dict, registry: dict = METHODS, check_row=None) -> None:
    """Names, overrides and features of every `methods` entry, against `registry`
    (kdflow.registry.METHODS, or GEN_METHODS for task generative), each row's values by `check_row`
    (c, key, spec) (default: _check_method_values)."""
    known = ", ".join(registry)
    check_row = check_row or _check_method_values
    rows: dict[str, int] = {}
    for i, entry in enumerate(c["methods"]):
        key = f"methods[{i}]"
        if isinstance(entry, dict):
            extra = sorted(set(entry) - {"method", "name", "params", "search", "pairs"})
            if extra:
                raise ConfigError(
                    f"config key '{key}.{extra[0]}' is not allowed; "
                    "allowed keys here: method, name, params, search, pairs"
                )
            only = entry.get("pairs", [0])  # absent: every pair
            n = len(c["pairs"])
            if (
                not isinstance(only, list)
                or not only
                or len(set(map(str, only))) != len(only)
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in only)
            ):
                raise ConfigError(
                    f"config key '{key}.pairs': {only!r} must list distinct indices of `pairs` "
                    f"(0 to {n - 1}); leave it out to distil every pair"
                )
            if "method" not in entry:
                raise ConfigError(f"config key '{key}': 'method' is a required property (one of: {known})")
            for sub in ("params", "search"):
                if not isinstance(entry.get(sub, {}), dict):
                    raise ConfigError(
                        f"config key '{key}.{sub}': must be a mapping of hyperparameter -> value"
                    )
        name_key = f"{key}.method" if isinstance(entry, dict) else key
        spec = plan.method_spec(entry)
        if spec.method not in registry:
            raise ConfigError(f"config key '{name_key}': unknown method {spec.method!r}; allowed: {known}")
        if not isinstance(spec.name, str) or not NAME.fullmatch(spec.name):
            raise ConfigError(
                f"config key '{key}.name': {spec.name!r} is not allowed "
                "(letters, digits and single underscores)"
            )
        if spec.name in ("scratch", "teacher"):
            raise ConfigError(f"config key '{key}.name': {spec.name!r} is reserved for the baselines")
        if spec.name in rows:
            raise ConfigError(
                f"config key '{key}': row name {spec.name!r} is already methods[{rows[spec.name]}]; "
                "give a second entry of one method its own `name`"
            )
        rows[spec.name] = i
        check_row(c, key, spec)


def _check_method_values(c: dict, key: str, spec: plan.MethodSpec) -> None:
    info = METHODS[spec.method]
    for p, value in spec.params.items():
        where = f"{key}.params.{p}"
        if p not in info.params:
            raise ConfigError(
                f"config key '{where}': not a hyperparameter of {spec.method!r}; "
                f"allowed: {', '.join(info.params)}"
            )
        default = info.params[p]
        if isinstance(default, bool) or isinstance(value, bool):
            if not (isinstance(default, bool) and isinstance(value, bool)):
                raise ConfigError(f"config key '{where}': {value!r} must be a {type(default).__name__}")
        elif isinstance(default, str) or default is None:
            if not isinstance(value, str):
                raise ConfigError(f"config key '{where}': {value!r} must be a layer name (a string)")
        elif not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"config key '{where}': {value!r} must be a number >= 0")
        elif isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"config key '{where}': {value!r} must be a whole number")
        elif p in info.bounds and not info.bounds[p][0] <= value <= info.bounds[p][1]:
            low, high = info.bounds[p]
            raise ConfigError(f"config key '{where}': {value!r} is outside the allowed [{low}, {high}]")
    for p, r in spec.search.items():
        where = f"{key}.search.{p}"
        if p not in info.tunable:
            raise ConfigError(
                f"config key '{where}': {spec.method!r} does not tune {p!r}; "
                f"tunable: {', '.join(info.tunable)}"
            )
        check_search_range(where, p, r, spec.params)
    if info.features is None:
        return
    models = c["models"]
    for i, pair in enumerate(c["pairs"]):
        if spec.pairs is not None and i not in spec.pairs:
            continue
        chain = [pair["teacher"], *pair.get("assistants", []), pair["student"]]
        for name in chain:
            arch = plan.architecture(c, name)
            if arch is None or models[name].get("combine") == "oracle":
                why = "an oracle chooses logits only" if arch else "members of different architectures"
                raise ConfigError(
                    f"config key '{key}': method {spec.method!r} reads features, and teacher {name!r} of "
                    f"pairs[{i}] is an ensemble that gives logits only ({why}); use a logit method "
                    "(kd, dkd, dist, noisy) or members of one architecture averaged by prob or logit"
                )
            family = arch["family"]
            if info.features.startswith("map") and family in VECTOR_BLOCKS:
                raise ConfigError(
                    f"config key '{key}': method {spec.method!r} needs spatial feature maps, and model "
                    f"{name!r} of pairs[{i}] (family {family!r}) gives only vectors; "
                    f"families with maps: {', '.join(sorted(set(FAMILIES) - VECTOR_BLOCKS))}"
                )
        if info.features == "map_same_channels":
            _check_same_channels(key, spec.method, i, [plan.architecture(c, n) for n in chain], chain)
        if info.reshapes_student:
            _check_reshapable(key, spec, i, chain, models)
        for side, names in (("student_layer", chain[1:]), ("teacher_layer", chain[:-1])):
            layer = spec.params.get(side)
            for name in names if layer else ():
                allowed = feature_names(plan.architecture(c, name))
                if layer not in allowed:
                    raise ConfigError(
                        f"config key '{key}.params.{side}': model {name!r} has no feature {layer!r}; "
                        f"allowed: {', '.join(allowed)}"
                    )


def check_search_range(where: str, p: str, r, params: dict, positive: bool = False) -> None:
    """A row's `search.<p>`: not also fixed in params, {low, high} numbers >= 0 (> 0 for a log
    range: `positive`), low <= high."""
    if p in params:
        raise ConfigError(f"config key '{where}': {p!r} is fixed in params; it cannot also be searched")
    if not isinstance(r, dict) or set(r) != {"low", "high"}:
        raise ConfigError(f"config key '{where}': must be {{low: <number>, high: <number>}}")
    floor, bound = (0, "> 0 (a log range)") if positive else (-1e-300, ">= 0")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > floor for v in r.values()):
        raise ConfigError(f"config key '{where}': low and high must be numbers {bound}")
    if r["low"] > r["high"]:
        raise ConfigError(f"config key '{where}': low ({r['low']}) must not exceed high ({r['high']})")


def _check_reshapable(key: str, spec: plan.MethodSpec, i: int, chain: list[str], models: dict) -> None:
    """A method that trains the student in another form (diffrep's branches) needs a family that
    says where, and a block (not the penultimate vector) to change."""
    for name in chain[1:]:
        family = models[name]["family"]
        if family not in REPARAM_FAMILIES:
            raise ConfigError(
                f"config key '{key}': method {spec.method!r} re-parameterises the student's layer, and "
                f"model {name!r} of pairs[{i}] (family {family!r}) has no such layer; "
                f"families it can train: {', '.join(sorted(REPARAM_FAMILIES))}"
            )
    layer = spec.params.get("student_layer")
    if layer and not re.fullmatch(r"block\d+(_pre)?", layer):
        raise ConfigError(
            f"config key '{key}.params.student_layer': method {spec.method!r} re-parameterises a "
            f"block's layer; {layer!r} is not a block (block1, block2, ...)"
        )


def _check_same_channels(key: str, method: str, i: int, specs: list[dict], chain: list[str]) -> None:
    """Blocks paired from the last one (methods.base.pair_blocks) must have equal channel counts."""
    for (t_name, t), (s_name, s) in zip(zip(chain, specs), zip(chain[1:], specs[1:])):
        ct, cs = block_channels(t), block_channels(s)
        k = min(len(ct), len(cs))
        if k < 2 or ct[len(ct) - k :] != cs[len(cs) - k :]:
            raise ConfigError(
                f"config key '{key}': method {method!r} compares blocks of equal channel counts, and "
                f"pairs[{i}] pairs {t_name!r} (block channels {ct}) with {s_name!r} ({cs}); it needs "
                f"two or more blocks of equal widths. Give the entry `pairs:` (the indices of pairs "
                "whose models have equal widths) to distil only those"
            )


def _check_tracking_uri(uri: str) -> None:
    """What the schema's prefix pattern cannot say: a host for http(s), a database path for sqlite."""
    shown = redact(uri)  # a refused URI may still carry a password
    allowed = "allowed: sqlite:///<path>.db, http(s)://host[:port][/path], file:///<abs path>"
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as e:
        raise ConfigError(f"config key 'tracking.uri': {shown!r} is malformed ({e}); {allowed}") from None
    if uri != uri.strip() or any(ch.isspace() for ch in parts.netloc):
        problem = "has whitespace around it or in its host"
    elif parts.scheme in ("http", "https") and not parts.hostname:
        problem = "has no host"
    elif parts.scheme in ("http", "https") and port == 0:
        problem = "has port 0"
    elif parts.scheme == "sqlite" and (parts.path in ("", "/") or parts.path.endswith("/")):
        problem = "names no database file"
    elif parts.scheme == "file" and parts.path in ("", "/"):
        problem = "names no directory"
    else:
        return
    raise ConfigError(f"config key 'tracking.uri': {shown!r} {problem}; {allowed}")


def main(argv: list[str]) -> int:
    config = yaml.safe_load(Path(argv[0]).read_text()) or {}
    try:
        check_config(config)
    except ConfigError as e:
        print(f"invalid config {argv[0]}: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
