rule parent_state:
    input:
        data=rules.prepare_data.output.data,
    output:
        state=f"{EXP}/parents/p{{p}}/step{{t}}.pt",
    params:
        run=lambda wc: run_settings(parent=int(wc.p), t=int(wc.t)),
    log:
        f"{LOGS}/parents/p{{p}}/step{{t}}.log",
    benchmark:
        f"{BENCHMARKS}/parent_state/p{{p}}/step{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/parent_state.py"


# One job trains a set of members of one (condition, t) as one network: each member alone, the k
# children of a parent, or every member of (condition, t), by `job_shape` (see member_slots).
rule train_members:
    input:
        unpack(parent_inputs),
        data=rules.prepare_data.output.data,
    output:
        final=member_outputs("children", "final.pt"),
        predictions=member_outputs("predictions", "parquet"),
        trajectory=member_outputs("trajectories", "parquet"),
    params:
        # experiment: written into each predictions and trajectories file (column and metadata)
        run=lambda wc: run_settings(condition=wc.cond, t=int(wc.t), members=job_members(wc),
                                    experiment=config["experiment"]),
    log:
        member_log(),
    benchmark:
        member_benchmark()
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/train_members.py"
