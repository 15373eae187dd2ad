# The paper's claims, each with its statistic, test over parents, p-value and verdict
# (coupledsgd.analysis.claims), from the metric and barrier tables; a claim the experiment cannot decide (a
# condition not run, one parent) is `inconclusive` with its reason. No setting changes them: no params.
rule claims:
    input:
        members=rules.metrics.output.members,
        ensembles=rules.metrics.output.ensembles,
        pairs=rules.metrics.output.pairs,
        forgetting=rules.metrics.output.forgetting,
        barriers=rules.barriers.output.table,
        onset=rules.barriers.output.onset,
    output:
        table=report(
            L.claims,
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": "claims", "format": "CSV"},
        ),
    log:
        L.analysis_log("claims"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=500,  # 0.16 GB measured at the paper configs' shape (bench/RESULTS.md)
    script:
        "../scripts/claims.py"
