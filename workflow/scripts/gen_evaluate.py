"""Test-set metrics of one generative model (kdflow.dgm.jobs.evaluate)."""

from pathlib import Path

from kdflow.dgm.jobs import evaluate
from kdflow.dgm.smk import gen_settings
from kdflow.pipeline.smk import data_ref, job_log, tracking_spec

sm = snakemake  # noqa: F821
with job_log(sm.log[0], sm.threads):
    classifier = sm.input.get("classifier")
    evaluate(
        data=data_ref(sm.config, sm.input.data),
        model_file=Path(sm.input.model),
        fit_json=Path(sm.input.fit),
        gen=gen_settings(sm.config),
        out=Path(sm.output.metrics),
        samples_out=Path(sm.output.samples),
        tracking=tracking_spec(sm.config),
        classifier=Path(classifier) if classifier else None,
    )
