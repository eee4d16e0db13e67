"""Generate (mnist1d) or read (mnist, cifar10) the dataset into one .npz."""

from pathlib import Path

from kdflow.pipeline.jobs import prepare_data
from kdflow.pipeline.smk import job_log

with job_log(snakemake.log[0]):  # noqa: F821
    p = snakemake.params  # noqa: F821
    prepare_data(p.name, p.root, p.seed, Path(snakemake.output[0]))  # noqa: F821
