"""Train one generative model alone by its ELBO: a teacher, or the student trained on real data
(kdflow.dgm.jobs.train)."""

from pathlib import Path

from kdflow import plan
from kdflow.dgm.jobs import train
from kdflow.dgm.smk import gen_settings
from kdflow.pipeline.smk import checkpoint_every_s, data_ref, job_info, job_log, tracking_spec, train_config

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    model, seed = sm.wildcards.model, sm.wildcards.seed
    train(
        data=data_ref(sm.config, sm.input.data),
        spec=sm.params.spec,
        cfg=train_config(sm.config, seed, model),
        gen=gen_settings(sm.config),
        info=job_info(sm.config, sm.rule, model, plan.role(sm.config, model), "scratch", seed),
        out_dir=Path(sm.output.model).parent,
        tracking=tracking_spec(sm.config),
        resolved_config=sm.config,
        checkpoint_every_s=checkpoint_every_s(),
    )
