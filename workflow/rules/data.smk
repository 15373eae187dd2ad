rule prepare_data:
    input:
        unpack(data_inputs),
    output:
        data=L.data,
    log:
        L.data_log,
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        data={k: v for k, v in config["data"].items() if k != "augment"},
    script:
        "../scripts/prepare_data.py"
