"""Distil the last model of a lineage from the one before it by one method, with its tuned or
configured hyperparameters (kdflow.pipeline.jobs.train)."""

from pathlib import Path

from kdflow.pipeline.jobs import train
from kdflow.pipeline.smk import edge_job, job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    pretrained = sm.input.get("pretrain")
    train(
        **edge_job(sm.config, sm.rule, sm.wildcards, sm.input, sm.params.spec),
        out_dir=Path(sm.output.model).parent,
        pretrained=Path(pretrained) if pretrained else None,
        resolved_config=sm.config,
    )
