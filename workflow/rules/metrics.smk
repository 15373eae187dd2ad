# Reads the members' files one (condition, t) group at a time and computes a group's networks side by side on
# the job's threads (the tables do not depend on their number); most of its time goes to the MACE bootstrap.
# Its memory is one group's (bench/bench_analysis.py, bench/RESULTS.md): 0.4 GB at the CIFAR-10 config's
# shape, 0.9-1.3 GB at Tiny-ImageNet's (15 members x 10,000 examples x 200 classes per group).
# Inputs: one file of each training job (see job_outputs); the member files come as params.
rule metrics:
    input:
        jobs=job_outputs(MEMBERS),
    output:
        members=L.table("members"),
        ensembles=L.table("ensembles"),
        pairs=L.table("pairs"),
        forgetting=L.table("forgetting"),
        summary=report(
            L.table("summary"),
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary", "format": "CSV"},
        ),
    log:
        L.analysis_log("metrics"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 2
    resources:
        mem_mb=3000,
    params:
        settings=config["metrics"],
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectory"),
    script:
        "../scripts/metrics.py"


# Learning curves: the training log's running means (from each trajectory file's footer) with the test
# accuracy at every evaluation point (from the forgetting table), one table for every member.
rule curves:
    input:
        jobs=job_outputs(MEMBERS),
        forgetting=L.table("forgetting"),
    output:
        table=L.table("curves"),
    log:
        L.analysis_log("curves"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        trajectories=all_member_outputs("trajectory"),
    script:
        "../scripts/curves.py"
