from coupledsgd.figures import run_figure

run_figure(snakemake.wildcards.name, dict(snakemake.input.items()), snakemake.output.png, snakemake.output.pdf,
           snakemake.log[0])
