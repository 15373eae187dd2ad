rule parent_state:
    input:
        data=rules.prepare_data.output.data,
    output:
        state=f"{EXP}/parents/p{{p}}/step{{t}}.pt",
    params:
        run=lambda wc: run_settings(parent=int(wc.p), t=int(wc.t)),
    log:
        f"{LOGS}/parents/p{{p}}/step{{t}}.log",
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/parent_state.py"


if not config["fuse_children"]:

    rule train_member:
        input:
            unpack(parent_input),
            data=rules.prepare_data.output.data,
        output:
            final=f"{EXP}/children/{{cond}}/t{{t}}/p{{p}}/c{{c}}/final.pt",
            predictions=f"{EXP}/predictions/{{cond}}/t{{t}}/p{{p}}/c{{c}}.parquet",
            trajectory=f"{EXP}/trajectories/{{cond}}/t{{t}}/p{{p}}/c{{c}}.parquet",
        params:
            run=lambda wc: run_settings(
                condition=wc.cond, t=int(wc.t), parent=int(wc.p), child=int(wc.c)
            ),
        log:
            f"{LOGS}/children/{{cond}}/t{{t}}/p{{p}}/c{{c}}.log",
        threads: config["threads"]
        resources:
            gpu=gpu_request(),
        conda:
            "../../envs/coupledsgd.yaml"
        script:
            "../scripts/train_member.py"


else:

    rule train_children:
        input:
            unpack(parent_input),
            data=rules.prepare_data.output.data,
        output:
            final=[f"{EXP}/children/{{cond}}/t{{t}}/p{{p}}/c{c}/final.pt" for c in CHILDREN],
            predictions=[f"{EXP}/predictions/{{cond}}/t{{t}}/p{{p}}/c{c}.parquet" for c in CHILDREN],
            trajectory=[f"{EXP}/trajectories/{{cond}}/t{{t}}/p{{p}}/c{c}.parquet" for c in CHILDREN],
        params:
            run=lambda wc: run_settings(condition=wc.cond, t=int(wc.t), parent=int(wc.p), fused=True),
        log:
            f"{LOGS}/children/{{cond}}/t{{t}}/p{{p}}/fused.log",
        threads: config["threads"]
        resources:
            gpu=gpu_request(),
        conda:
            "../../envs/coupledsgd.yaml"
        script:
            "../scripts/train_children.py"
