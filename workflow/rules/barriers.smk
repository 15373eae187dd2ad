# Error barriers between the children of one parent (docs/design.md, "Error barriers"), for the barrier set of
# coupledsgd.core.grid.barrier_set: the re-initialisation conditions and their coupled-to-t-reset
# reference at reinit.steps, and the instability analysis (coupled-to-t and coupled-to-t-reset at
# barrier.spawn_steps, no-coupling as the reference), every parent. The same job writes the children's
# weight-space distances from their spawn state (the parent state, as an input).

from coupledsgd.core.grid import barrier_set


rule barrier:
    input:
        data=rules.prepare_data.output.data,
        # one file of each training job of these children (see job_outputs); their final states
        # come as params
        jobs=lambda wc: job_outputs(barrier_children(wc)),
        parent=lambda wc: barrier_parent(wc),
    output:
        table=L.barrier("{cond}", "{t}", "{p}"),
        weights=L.barrier_weights("{cond}", "{t}", "{p}"),
    log:
        L.barrier_log("{cond}", "{t}", "{p}"),
    benchmark:
        L.barrier_benchmark("{cond}", "{t}", "{p}")
    conda:
        "../../envs/coupledsgd.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_request(),
        mem_mb=JOB_MEM_MB,
    params:
        # what a barrier depends on: choosing the spawn steps or the onset threshold reruns no barrier job
        barrier={
            k: v
            for k, v in config["barrier"].items()
            if k not in ("spawn_steps", "onset_threshold")
        },
        seed=config["seed"],
        batch_size=config["training"]["batch_size"],
        eval_batch_size=config["training"]["eval_batch_size"],
        device=config["device"],
        condition=lambda wc: wc.cond,
        t=lambda wc: int(wc.t),
        parent=lambda wc: int(wc.p),
        finals=lambda wc: [
            L.final(m.condition, m.t, m.parent, m.child) for m in barrier_children(wc)
        ],
    script:
        "../scripts/barrier.py"


rule barriers:
    input:
        tables=[L.barrier(cond, t, p) for cond, t, p in barrier_set(config)],
        weights=[L.barrier_weights(cond, t, p) for cond, t, p in barrier_set(config)],
    output:
        table=L.table("barriers"),
        weights=L.table("weights"),
        onset=L.table("onset"),
    log:
        L.analysis_log("barriers"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=500,  # 0.13 GB measured for the CIFAR-10 config's 39 tables (bench/RESULTS.md)
    params:
        barrier=config["barrier"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/barriers_table.py"
