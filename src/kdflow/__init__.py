"""kdflow: knowledge distillation as a Snakemake DAG."""
