# The paper's claims, each with its statistic, bootstrap interval over parents and verdict
# (coupledsgd.analysis.claims), from the metric and barrier tables; a claim the experiment cannot decide (a
# condition not run, one parent) is `inconclusive` with its reason.
rule claims:
    input:
        members=rules.metrics.output.members,
        ensembles=rules.metrics.output.ensembles,
        pairs=rules.metrics.output.pairs,
        forgetting=rules.metrics.output.forgetting,
        barriers=rules.barriers.output.table,
    output:
        table=report(f"{EXP}/claims.csv", caption="../report/claims.rst", category="Tables"),
    params:
        settings=config["metrics"],
    log:
        f"{LOGS}/claims.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/claims.py"
