"""The best hyperparameters of an edge's finished study (kdflow.pipeline.tune_jobs.select_best)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log, tuning_study
from kdflow.pipeline.tune_jobs import select_best

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    study = tuning_study(sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, False)
    select_best(study, Path(sm.input.run), Path(sm.output.best), Path(sm.output.trials))
