# One edge's Optuna study: tune_start creates it, tuning.workers tune_worker jobs run its trials in
# parallel against one journal, tune_select writes the best values (kdflow.pipeline.tune_jobs).
# The journal is deliberately not an output: Snakemake deletes a failed job's outputs, and the
# study must survive a failure so that a rerun continues it.


rule tune_start:
    input:
        unpack(get_tuning_teacher),
        unpack(get_tuning_pretrain),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        run=f"{TUNE_DIR}/run.json",
    log:
        f"{RESULTS}/logs/tune/{{method}}/{{lineage}}/start.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        **get_tuning_params(),
    script:
        "../scripts/tune_start.py"


rule tune_worker:
    input:
        unpack(get_tuning_teacher),
        unpack(get_tuning_pretrain),
        data=get_data_file(),
        run=f"{TUNE_DIR}/run.json",
    output:
        f"{TUNE_DIR}/workers/{{worker}}.json",
    log:
        f"{RESULTS}/logs/tune/{{method}}/{{lineage}}/worker{{worker}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{method}}/{{lineage}}/worker{{worker}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        **get_tuning_params(),
    script:
        "../scripts/tune_worker.py"


rule tune_select:
    input:
        unpack(get_tuning_teacher),
        unpack(get_tuning_pretrain),
        unpack(get_tuning_workers),
        data=get_data_file(),
        run=f"{TUNE_DIR}/run.json",
    output:
        best=f"{TUNE_DIR}/best_params.json",
        trials=f"{TUNE_DIR}/trials.parquet",
    log:
        f"{RESULTS}/logs/tune/{{method}}/{{lineage}}/select.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        **get_tuning_params(),
    script:
        "../scripts/tune_select.py"
