"""The best hyperparameters of an edge's finished study (kdflow.pipeline.tune_jobs.select_best;
kdflow.dgm.tune for task generative)."""

from pathlib import Path

from kdflow.pipeline.smk import job_log

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    paths = {**sm.input, "journal": sm.params.journal}
    args = (sm.config, sm.rule, sm.wildcards.method, sm.wildcards.lineage, paths, False)
    if sm.config["task"] == "generative":
        from kdflow.dgm.smk import gen_study
        from kdflow.dgm.tune import select_best

        select_best(gen_study(*args), Path(sm.input.run), Path(sm.output.best), Path(sm.output.trials))
    else:
        from kdflow.pipeline.smk import tuning_study
        from kdflow.pipeline.tune_jobs import select_best

        select_best(tuning_study(*args), Path(sm.input.run), Path(sm.output.best), Path(sm.output.trials))
