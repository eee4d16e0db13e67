"""Adapters from Snakemake's job objects to the generative jobs' arguments (as kdflow.pipeline.smk
is for classification's): plain values in, so they are tested without Snakemake."""

from __future__ import annotations

from pathlib import Path

from kdflow import plan
from kdflow.atomic import read_json
from kdflow.dgm.jobs import GenSettings, ModelRef
from kdflow.dgm.tune import GenStudy
from kdflow.pipeline.jobs import MethodRef
from kdflow.pipeline.smk import (
    checkpoint_every_s,
    data_ref,
    edge_job_info,
    tracking_spec,
    train_config,
    train_settings,
)
from kdflow.registry import GEN_METHODS, GEN_RANGES
from kdflow.tuning import Range


def gen_settings(config: dict) -> GenSettings:
    return GenSettings(**config["generative"])


def family_of(config: dict, lineage: str) -> str:
    return config["models"][plan.student(lineage)]["family"]


def gen_method_ref(config: dict, name: str, family: str, tuned_file: str | None = None) -> MethodRef:
    """The row `name`'s method with every value for `family`: the registry's defaults, the row's
    params, then its study's chosen values (best_params.json) when it was tuned."""
    spec = plan.method_by_name(config, name)
    hp = {**GEN_METHODS[spec.method].params[family], **spec.params}
    if tuned_file:
        hp.update({k: v for k, v in read_json(tuned_file)["params"].items() if k in hp})
    return MethodRef(spec.method, hp)


def gen_search_space(config: dict, name: str, lineage: str) -> dict[str, Range]:
    """What the row `name`'s study tunes on the edge ending `lineage` (plan.tuned), over the
    registry's ranges or the row's `search` ones."""
    spec = plan.method_by_name(config, name)
    space = {}
    for p in plan.tuned(config, name, lineage):
        low, high, log = GEN_RANGES[p]
        r = spec.search.get(p, {"low": low, "high": high})
        space[p] = Range(float(r["low"]), float(r["high"]), log)
    return space


def teacher_model_ref(inputs) -> ModelRef:
    return ModelRef(Path(inputs["teacher_model"]), Path(inputs["teacher_fit"]))


def gen_edge_job(config: dict, rule: str, wildcards, inputs, spec: dict) -> dict:
    """The arguments of kdflow.dgm.jobs.train for a distillation edge."""
    method, lineage, seed = wildcards.method, wildcards.lineage, wildcards.seed
    return {
        "data": data_ref(config, inputs["data"]),
        "spec": spec,
        "cfg": train_config(config, seed, plan.student(lineage)),
        "gen": gen_settings(config),
        "info": edge_job_info(config, rule, method, lineage, seed),
        "tracking": tracking_spec(config),
        "teacher": teacher_model_ref(inputs),
        "method": gen_method_ref(config, method, family_of(config, lineage), inputs.get("tuned")),
        "checkpoint_every_s": checkpoint_every_s(),
    }


def gen_study(config: dict, rule: str, method: str, lineage: str, paths, on_device: bool) -> GenStudy:
    seed = config["tuning"]["seed"]
    student = plan.student(lineage)
    family = family_of(config, lineage)
    settings = train_config if on_device else train_settings
    return GenStudy(
        data=data_ref(config, paths["data"]),
        spec=config["models"][student],
        cfg=settings(config, seed, student),
        gen=gen_settings(config),
        info=edge_job_info(config, rule, method, lineage, seed),
        teacher=teacher_model_ref(paths),
        method=gen_method_ref(config, method, family),
        space=gen_search_space(config, method, lineage),
        n_trials=config["tuning"]["n_trials"],
        journal=Path(paths["journal"]),
        tracking=tracking_spec(config),
    )
