rule metrics:
    input:
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectories"),
    output:
        members=f"{EXP}/metrics/members.parquet",
        ensembles=f"{EXP}/metrics/ensembles.parquet",
        pairs=f"{EXP}/metrics/pairs.parquet",
        forgetting=f"{EXP}/metrics/forgetting.parquet",
        summary=report(f"{EXP}/metrics/summary.csv", caption="../report/summary.rst", category="Tables"),
    params:
        settings=config["metrics"],
    log:
        f"{LOGS}/metrics.log",
    threads: 1
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/metrics.py"
