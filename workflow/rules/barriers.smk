from coupledsgd.config import conditions as config_conditions
from coupledsgd.spawn import parse_condition


def barrier_inputs():
    """Per-(condition, t, parent) barrier tables of the barrier set (DESIGN.md section 4, figure 3):
    every re-initialisation condition, and coupled-to-t-reset (the "no re-initialisation"
    reference), at every spawn step of reinit.steps, for every parent; only the conditions that
    config["conditions"] holds."""
    chosen = [
        cond
        for cond in config_conditions(config)
        if cond == "coupled-to-t-reset" or parse_condition(cond).side is not None
    ]
    return [
        f"{EXP}/barriers/{cond}/t{t}/p{p}.parquet"
        for cond in chosen
        for t in config["reinit"]["steps"]
        for p in range(config["ensemble"]["parents"])
    ]


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
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/barrier.py"


rule barriers:
    input:
        tables=barrier_inputs(),
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
