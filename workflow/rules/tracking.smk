# Creates the MLflow backend and experiment once, before any job runs: a fresh sqlite DB
# corrupts when several jobs touch it first at the same time.
rule init_tracking:
    output:
        TRACKING_MARKER,
    log:
        f"{RESULTS}/logs/init_tracking.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/init_tracking.py"
