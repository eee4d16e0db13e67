"""Create the MLflow backend and experiment once, before jobs fan out."""

from kdflow.atomic import write_json
from kdflow.pipeline.smk import job_log, tracking_spec
from kdflow.tracking import init_tracking, redact

with job_log(snakemake.log[0]):  # noqa: F821
    spec = tracking_spec(snakemake.config)  # noqa: F821
    exp_id = init_tracking(spec)
    write_json(
        snakemake.output[0],  # noqa: F821
        {"enabled": spec.enabled, "uri": redact(spec.uri), "experiment_id": exp_id},
    )
