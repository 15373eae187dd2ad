# The figures of DESIGN.md section 4: one job per figure file, reading only the metric tables that figure
# needs (coupledsgd.analysis.figures.FIGURES). Each PNG goes into `snakemake --report` with its own caption,
# workflow/report/<figure name>.rst; the PDF beside it is for papers.
rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(f"{EXP}/figures/{{name}}.png", caption="../report/figure.rst", category="Figures",
                   labels={"figure": "{name}"}),
        pdf=f"{EXP}/figures/{{name}}.pdf",
    params:
        caption=lambda wc: FIGURE_CAPTIONS[wc.name],
    wildcard_constraints:
        name="|".join(FIGURES),
    log:
        f"{LOGS}/figures/{{name}}.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../../envs/coupledsgd.yaml"
    script:
        "../scripts/figure.py"
