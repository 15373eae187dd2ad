# Reads the members' files one (condition, t) group at a time; most of its time goes to the MACE bootstrap's
# matrix products, which use the job's threads (Snakemake sets OPENBLAS_NUM_THREADS to them).
rule metrics:
    input:
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectory"),
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
    threads: 2
    params:
        settings=config["metrics"],
    script:
        "../scripts/metrics.py"
