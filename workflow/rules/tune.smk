# The journal is deliberately not an output: Snakemake deletes a failed job's outputs, and the
# study must survive a failure so that a rerun continues it.
rule tune:
    input:
        unpack(get_tuning_teacher),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        best=f"{TUNE_DIR}/best_params.json",
        trials=f"{TUNE_DIR}/trials.parquet",
    log:
        f"{RESULTS}/logs/tune/{{teacher}}__{{student}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{teacher}}__{{student}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=1,
    params:
        spec=lambda wc: config["models"][wc.student],
        settings=lambda wc: get_training_settings(wc.student),  # a rerun trigger, as in train
        tuning={k: v for k, v in config["tuning"].items() if k != "enabled"},
        journal=f"{TUNE_DIR}/study.journal",
    script:
        "../scripts/tune.py"
