"""Distil the last model of a lineage from the one before it by one method, with its tuned or
configured hyperparameters (kdflow.pipeline.jobs.train)."""

from pathlib import Path

from kdflow import plan
from kdflow.pipeline.jobs import train
from kdflow.pipeline.smk import (
    checkpoint_every_s,
    data_ref,
    edge_job_info,
    job_log,
    method_ref,
    teacher_ref,
    tracking_spec,
    train_config,
)

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    method, lineage, seed = sm.wildcards.method, sm.wildcards.lineage, sm.wildcards.seed
    pretrained = sm.input.get("pretrain")
    train(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.params.spec,
        cfg=train_config(sm.config, seed, plan.student(lineage)),
        info=edge_job_info(sm.config, sm.rule, method, lineage, seed),
        out_dir=Path(sm.output.model).parent,
        tracking=tracking_spec(sm.config),
        teacher=teacher_ref(sm.input),
        method=method_ref(sm.config, method, sm.input.get("tuned")),
        pretrained=Path(pretrained) if pretrained else None,
        resolved_config=sm.config,
        checkpoint_every_s=checkpoint_every_s(),
    )
