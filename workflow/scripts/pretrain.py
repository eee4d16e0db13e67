"""A method's stage before student training: FT's paraphraser, AB's and FSP's initialisation
(kdflow.pipeline.jobs.pretrain)."""

from pathlib import Path

from kdflow.pipeline.jobs import pretrain
from kdflow.pipeline.smk import edge_job, job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    pretrain(**edge_job(sm.config, sm.rule, sm.wildcards, sm.input, sm.params.spec), out=Path(sm.output[0]))
