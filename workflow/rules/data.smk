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
        # synthetic data is drawn from the seed; the registered datasets do not depend on it
        data={
            **{k: v for k, v in config["data"].items() if k != "augment"},
            **(
                {"seed": config["seed"]}
                if config["data"]["name"] == "synthetic"
                else {}
            ),
        },
    script:
        "../scripts/prepare_data.py"
