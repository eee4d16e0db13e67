"""An early-stopped teacher: the weights its model's training kept at one epoch, as a model."""

from pathlib import Path

from kdflow import plan
from kdflow.pipeline.jobs import snapshot
from kdflow.pipeline.smk import job_info, job_log, tracking_spec

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    model, seed = sm.wildcards.model, sm.wildcards.seed
    snapshot(
        parent_fit=Path(sm.input.parent_fit),
        epoch=int(sm.params.epoch),
        info=job_info(sm.config, sm.rule, model, plan.role(sm.config, model), "scratch", seed),
        out_dir=Path(sm.output.model).parent,
        tracking=tracking_spec(sm.config),
    )
