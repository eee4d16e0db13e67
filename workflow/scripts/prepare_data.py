"""Generate (mnist1d), load (digits) or read (the others, from dataset.root) the dataset into one .npz."""

from pathlib import Path

from kdflow.pipeline.jobs import prepare_data
from kdflow.pipeline.smk import job_log

with job_log(snakemake.log[0]):  # noqa: F821
    p = snakemake.params  # noqa: F821
    prepare_data(p.name, p.root, p.seed, Path(snakemake.output[0]), p.image_size)  # noqa: F821
