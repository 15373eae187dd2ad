# Reads the members' files one (condition, t) group at a time and computes a group's networks side by side on
# the job's threads (the tables do not depend on their number); most of its time goes to the MACE bootstrap.
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
