"""An ensemble teacher assembled from its trained members (no training)."""

from pathlib import Path

from kdflow import plan
from kdflow.pipeline.jobs import ensemble
from kdflow.pipeline.smk import data_ref, job_info, job_log, tracking_spec

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    model, seed = sm.wildcards.model, sm.wildcards.seed
    ensemble(
        data=data_ref(sm.config, sm.input.data),
        member_models=[Path(p) for p in sm.input.models],
        member_fits=[Path(p) for p in sm.input.fits],
        combine=sm.params.combine,
        info=job_info(sm.config, sm.rule, model, plan.role(sm.config, model), "scratch", seed),
        out_dir=Path(sm.output.model).parent,
        tracking=tracking_spec(sm.config),
    )
