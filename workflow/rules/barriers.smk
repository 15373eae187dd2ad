# Error barriers between the children of one parent (DESIGN.md section 3), for the barrier set of
# coupledsgd.core.grid.barrier_set: the re-initialisation conditions and their coupled-to-t-reset
# reference at reinit.steps, every parent.

from coupledsgd.core.grid import barrier_set


rule barrier:
    input:
        data=rules.prepare_data.output.data,
        finals=expand(
            f"{EXP}/children/{{{{cond}}}}/t{{{{t}}}}/p{{{{p}}}}/c{{c}}/final.pt",
            c=range(config["ensemble"]["children"]),
        ),
    output:
        table=f"{EXP}/barriers/{{cond}}/t{{t}}/p{{p}}.parquet",
    params:
        barrier=config["barrier"],
        seed=config["seed"],
        batch_size=config["training"]["batch_size"],
        eval_batch_size=config["training"]["eval_batch_size"],
        device=config["device"],
        condition=lambda wc: wc.cond,
        t=lambda wc: int(wc.t),
        parent=lambda wc: int(wc.p),
    log:
        f"{LOGS}/barriers/{{cond}}/t{{t}}/p{{p}}.log",
    benchmark:
        f"{BENCHMARKS}/barrier/{{cond}}/t{{t}}/p{{p}}.tsv"
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/barrier.py"


rule barriers:
    input:
        tables=[
            f"{EXP}/barriers/{cond}/t{t}/p{p}.parquet"
            for cond, t, p in barrier_set(config)
        ],
    output:
        table=f"{EXP}/metrics/barriers.parquet",
    params:
        barrier=config["barrier"],
        seed=config["seed"],
        device=config["device"],
    log:
        f"{LOGS}/metrics/barriers.log",
    threads: 1
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/barriers_table.py"
