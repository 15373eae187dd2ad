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
            L.table("summary"), caption="../report/summary.rst", category="Tables"
        ),
    log:
        L.analysis_log("metrics"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    params:
        settings=config["metrics"],
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectory"),
    script:
        "../scripts/metrics.py"
