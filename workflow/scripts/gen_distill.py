"""Distil a generative student from its teacher without data, by one method
(kdflow.dgm.jobs.train with a teacher)."""

from pathlib import Path

from kdflow.dgm.jobs import train
from kdflow.dgm.smk import gen_edge_job
from kdflow.pipeline.smk import job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    train(
        **gen_edge_job(sm.config, sm.rule, sm.wildcards, sm.input, sm.params.spec),
        out_dir=Path(sm.output.model).parent,
        resolved_config=sm.config,
    )
