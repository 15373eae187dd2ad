rule prepare_data:
    output:
        data=f"{EXP}/data.pt",
    params:
        data={k: v for k, v in config["data"].items() if k != "augment"},
    log:
        f"{LOGS}/prepare_data.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/prepare_data.py"
