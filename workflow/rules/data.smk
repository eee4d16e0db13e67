rule prepare_data:
    output:
        get_data_file(),
    log:
        "resources/logs/prepare_data.log",
    conda:
        CONDA_ENV
    params:
        name=config["dataset"]["name"],
        root=config["dataset"]["root"],
        seed=config["dataset"]["seed"],
        image_size=config["dataset"].get("image_size"),
    script:
        "../scripts/prepare_data.py"
