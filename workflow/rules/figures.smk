# The figures (docs/design.md, "Figures"): one job per figure file, reading only the metric tables that figure
# needs (coupledsgd.analysis.figures.FIGURES). Each PNG goes into `snakemake --report` with its own caption,
# workflow/report/<figure name>.rst; the PDF beside it is for papers.
rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(
            L.figure("{name}", "png"),
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{name}"},
        ),
        pdf=L.figure("{name}", "pdf"),
    log:
        L.figure_log("{name}"),
    wildcard_constraints:
        name="|".join(FIGURES),
    conda:
        "../../envs/coupledsgd.yaml"
    threads: 1
    resources:
        mem_mb=750,  # 0.24-0.26 GB measured at the paper configs' shape (bench/RESULTS.md)
    params:
        caption=lambda wc: FIGURE_CAPTIONS[wc.name],
    script:
        "../scripts/figure.py"
