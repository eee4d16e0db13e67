"""Continual learning of a class-conditional ladder VAE, one seed (kdflow.dgm.jobs.continual)."""

from pathlib import Path

from kdflow.dgm.jobs import continual
from kdflow.dgm.smk import gen_settings
from kdflow.pipeline.smk import data_ref, job_log, train_config

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    model = sm.config["continual"]["model"]
    continual(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.config["models"][model],
        cfg=train_config(sm.config, sm.wildcards.seed, model),
        gen=gen_settings(sm.config),
        cl=sm.config["continual"],
        out=Path(sm.output[0]),
    )
