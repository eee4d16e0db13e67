"""A method's stage before student training: FT's paraphraser, AB's and FSP's initialisation
(kdflow.pipeline.jobs.pretrain)."""

from pathlib import Path

from kdflow import plan
from kdflow.pipeline.jobs import pretrain
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
    pretrain(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.params.spec,
        cfg=train_config(sm.config, seed, plan.student(lineage)),
        info=edge_job_info(sm.config, sm.rule, method, lineage, seed),
        out=Path(sm.output[0]),
        tracking=tracking_spec(sm.config),
        teacher=teacher_ref(sm.input),
        method=method_ref(sm.config, method),
        checkpoint_every_s=checkpoint_every_s(),
    )
