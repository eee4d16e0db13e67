rule evaluate:
    input:
        unpack(get_model_files),
        unpack(get_eval_teacher),
        data=get_data_file(),
        tracking=get_tracking_marker(),
    output:
        f"{RESULTS}/{{kind}}/{{run}}/seed{{seed}}/test_metrics.json",
    log:
        f"{RESULTS}/logs/evaluate/{{kind}}/{{run}}/seed{{seed}}.log",
    conda:
        CONDA_ENV
    threads: 1
    script:
        "../scripts/evaluate.py"
