rule parent_state:
    input:
        data=rules.prepare_data.output.data,
    output:
        state=L.parent_state("{p}", "{t}"),
    log:
        L.parent_log("{p}", "{t}"),
    benchmark:
        L.parent_benchmark("{p}", "{t}")
    conda:
        "../../envs/coupledsgd.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
        mem_mb=JOB_MEM_MB,
    params:
        run=lambda wc: run_settings(parent=int(wc.p), t=int(wc.t)),
    script:
        "../scripts/parent_state.py"


# One job trains a set of members of one (condition, t) as one network: each member alone, the k
# children of a parent, or every member of (condition, t), by `job_shape` (see member_slots).
rule train_members:
    input:
        unpack(parent_inputs),
        data=rules.prepare_data.output.data,
    output:
        final=member_outputs("final"),
        predictions=member_outputs("predictions"),
        trajectory=member_outputs("trajectory"),
    log:
        L.job_log(JOB_SHAPE, "{cond}", "{t}"),
    benchmark:
        L.job_benchmark(JOB_SHAPE, "{cond}", "{t}")
    conda:
        "../../envs/coupledsgd.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
        mem_mb=JOB_MEM_MB,
    params:
        # experiment: written into each predictions and trajectories file (column and metadata)
        run=lambda wc: run_settings(
            condition=wc.cond,
            t=int(wc.t),
            members=job_members(wc),
            experiment=config["experiment"],
        ),
    script:
        "../scripts/train_members.py"
