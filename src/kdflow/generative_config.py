"""Config checks of `task: generative` (kdflow.dgm), and what a classification config may not use.

Called by kdflow.config._check_semantics; torch-free, like all config validation. A teacher and the
models distilled from it along a pair's chain run on one noise draw (KD4DGM shares eps between the
chains), so they must be of one family with equal latent shapes: checked here, before any job.
"""

from __future__ import annotations

from kdflow import plan
from kdflow.config import ConfigError, check_methods, check_search_range, input_shape
from kdflow.registry import GEN_DATASETS, GEN_FAMILIES, GEN_METHODS, GEN_RANGES, latent_shapes

# keys of a classification experiment that mean nothing for generative models
_CLASSIFY_ONLY = ("sweeps", "published")
_GEN_ONLY = ("old_faithful",)  # datasets without classes


def refuse_generative(c: dict) -> None:
    """A classification config names no generative family or dataset."""
    if c["continual"]["enabled"]:
        raise ConfigError("config key 'continual.enabled': continual learning is for task: generative")
    if c["dataset"]["name"] in _GEN_ONLY:
        raise ConfigError(
            f"config key 'dataset.name': {c['dataset']['name']!r} has no classes to classify; "
            "it is for task: generative"
        )
    for name, spec in c["models"].items():
        if spec.get("family") in GEN_FAMILIES:
            raise ConfigError(
                f"config key 'models.{name}.family': {spec['family']!r} is a generative model; "
                "set task: generative to distil generative models"
            )
        if isinstance(spec.get("hidden"), int):
            raise ConfigError(
                f"config key 'models.{name}.hidden': mlp takes a list of widths, e.g. [{spec['hidden']}]"
            )
        if "latent" in spec or "rnn" in spec:
            knob = "latent" if "latent" in spec else "rnn"
            raise ConfigError(
                f"config key 'models.{name}.{knob}': a knob of the generative families (lvae, vrnn); "
                f"not of {spec.get('family')!r}"
            )


def check_generative(c: dict) -> None:
    ds = c["dataset"]["name"]
    if ds not in GEN_DATASETS:
        raise ConfigError(
            f"config key 'dataset.name': task generative models {', '.join(GEN_DATASETS)}; got {ds!r}"
        )
    for key in _CLASSIFY_ONLY:
        if c[key] and (key != "published" or any(c[key].values())):
            raise ConfigError(f"config key '{key}': classification experiments only (task: classify)")
    for i, pair in enumerate(c["pairs"]):
        if pair.get("published"):
            raise ConfigError(f"config key 'pairs[{i}].published': classification experiments only")
    shape = input_shape(c["dataset"])
    for name, spec in c["models"].items():
        _check_model(name, spec, ds, shape)
    _check_train(c)
    _check_chains(c, shape)
    check_methods(c, GEN_METHODS, _check_row_families)
    _check_continual(c)


def _check_continual(c: dict) -> None:
    cl = c["continual"]
    if not cl["enabled"]:
        return
    if c["dataset"]["name"] != "digits":
        raise ConfigError(
            f"config key 'continual.enabled': continual learning splits digits' classes into two tasks; "
            f"dataset is {c['dataset']['name']!r}"
        )
    model = cl["model"]
    lvaes = sorted(n for n, s in c["models"].items() if s.get("family") == "lvae")
    if model not in lvaes:
        raise ConfigError(
            f"config key 'continual.model': {model!r} is not an lvae under models; "
            f"allowed: {', '.join(lvaes)}"
        )
    first, second = cl["tasks"]
    if set(first) & set(second):
        raise ConfigError(
            f"config key 'continual.tasks': classes {sorted(set(first) & set(second))} are in both tasks"
        )


def _check_model(name: str, spec: dict, dataset: str, shape: tuple[int, ...]) -> None:
    if "family" not in spec:
        kind = "snapshot" if "snapshot_of" in spec else "ensemble"
        raise ConfigError(
            f"config key 'models.{name}': a {kind} teacher is for classification; "
            f"task generative takes models of a family ({', '.join(GEN_FAMILIES)})"
        )
    family = spec["family"]
    if family not in GEN_FAMILIES:
        raise ConfigError(
            f"config key 'models.{name}.family': {family!r} is a classifier; task generative "
            f"takes {', '.join(GEN_FAMILIES)}"
        )
    rank, knobs = GEN_FAMILIES[family]
    for knob in spec:
        if knob not in ("family", "train") and knob not in knobs:
            raise ConfigError(
                f"config key 'models.{name}.{knob}': not a knob of family {family!r}; "
                f"allowed: {', '.join(knobs)}"
            )
    if isinstance(spec.get("hidden", 0), list):
        raise ConfigError(f"config key 'models.{name}.hidden': one width (a number) for family {family!r}")
    if family == "vrnn" and isinstance(spec.get("latent", 0), list):
        raise ConfigError(f"config key 'models.{name}.latent': vrnn has one z_t size (a number)")
    if family == "lvae" and isinstance(spec.get("latent"), list):
        layers = spec.get("layers", 3)
        if len(spec["latent"]) != layers:
            raise ConfigError(
                f"config key 'models.{name}.latent': {len(spec['latent'])} sizes for {layers} layers "
                f"(models.{name}.layers); give one per layer or one number"
            )
    if family == "lvae" and spec.get("channels") and len(shape) != 3:
        raise ConfigError(
            f"config key 'models.{name}.channels': a convolutional ladder VAE reads (C, H, W) images; "
            f"dataset {dataset!r} has inputs of shape {shape} (leave channels out for an MLP ladder VAE)"
        )
    if family == "hm" and dataset != "old_faithful":
        raise ConfigError(
            f"config key 'models.{name}.family': the Helmholtz machine models 2-D observations; "
            f"dataset {dataset!r} is not old_faithful"
        )
    if rank is not None and len(shape) != rank:
        raise ConfigError(
            f"config key 'models.{name}.family': {family!r} reads (L,) signals; dataset {dataset!r} has "
            f"inputs of shape {shape}"
        )


def _check_train(c: dict) -> None:
    for name in plan.trained_models(c):
        settings = plan.train_settings(c, name)
        own = c["models"][name].get("train", {})
        for k in ("augment", "label_smoothing"):
            value = settings.get(k)
            if any(value.values()) if isinstance(value, dict) else value:
                where = f"models.{name}.train.{k}" if k in own else f"train.{k}"
                raise ConfigError(f"config key '{where}': classification training only (task: classify)")


def _check_chains(c: dict, shape: tuple[int, ...]) -> None:
    """Along each pair, one family and equal latent shapes: the chains share their noise."""
    models = c["models"]
    for i, pair in enumerate(c["pairs"]):
        t = pair["teacher"]
        t_spec = models[t]
        steps = [(f"assistants[{j}]", n) for j, n in enumerate(pair.get("assistants", []))]
        for key, name in [*steps, ("student", pair["student"])]:
            spec = models[name]
            if spec["family"] != t_spec["family"]:
                raise ConfigError(
                    f"config key 'pairs[{i}].{key}': {name!r} is a {spec['family']} and teacher {t!r} a "
                    f"{t_spec['family']}; a chain distils one family (a student runs on its teacher's noise)"
                )
            mine, theirs = latent_shapes(spec, shape), latent_shapes(t_spec, shape)
            if mine != theirs:
                raise ConfigError(
                    f"config key 'pairs[{i}].{key}': {name!r} has latent shapes {mine} and teacher {t!r} "
                    f"{theirs}; a student runs on its teacher's noise, so they must match "
                    f"(models.{name}.layers / latent)"
                )


def _check_row_families(c: dict, key: str, spec: plan.MethodSpec) -> None:
    info = GEN_METHODS[spec.method]
    for pair in plan.method_pairs(c, spec):
        family = c["models"][pair.chain[-1]]["family"]
        if family not in info.params:
            raise ConfigError(
                f"config key '{key}': method {spec.method!r} distils {', '.join(info.params)}, and pair "
                f"{pair.label} is a {family}"
            )
        allowed = info.params[family]
        for p, value in spec.params.items():
            if p not in allowed:
                raise ConfigError(
                    f"config key '{key}.params.{p}': not a hyperparameter of {spec.method!r} for {family}; "
                    f"allowed: {', '.join(allowed)}"
                )
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or value < 0
            ):
                raise ConfigError(f"config key '{key}.params.{p}': {value!r} must be a number >= 0")
            if p == "lr" and value == 0:
                raise ConfigError(f"config key '{key}.params.lr': must be > 0")
        for p, r in spec.search.items():
            if p not in allowed or p not in GEN_RANGES:
                tunable = [q for q in allowed if q in GEN_RANGES]
                raise ConfigError(
                    f"config key '{key}.search.{p}': {spec.method!r} does not tune {p!r} for {family}; "
                    f"tunable: {', '.join(tunable)}"
                )
            check_search_range(f"{key}.search.{p}", p, r, spec.params, positive=True)
