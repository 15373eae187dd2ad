# The claims and summary tables as HTML pages (coupledsgd.analysis.pages): `snakemake --report` shows an
# HTML result inside the report, where it offers a CSV only as a download, so these are what a reader of
# the report sees first; the CSV files stay in the report beside them. One rule per page, since a report
# caption is opened by a fixed path.
rule claims_page:
    input:
        table=L.claims,
    output:
        page=report(
            L.table_page("claims"),
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": "claims", "format": "table"},
        ),
    log:
        L.table_page_log("claims"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=300,
    params:
        name="claims",
        experiment=config["experiment"],
    script:
        "../scripts/table_page.py"


rule summary_page:
    input:
        table=L.table("summary"),
    output:
        page=report(
            L.table_page("summary"),
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary", "format": "table"},
        ),
    log:
        L.table_page_log("summary"),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=300,
    params:
        name="summary",
        experiment=config["experiment"],
    script:
        "../scripts/table_page.py"
