from coupledsgd.jobs.runtime import run_stage
from coupledsgd.jobs.analysis import run_figure

run_stage(run_figure, snakemake.wildcards.name, dict(snakemake.input.items()), snakemake.output.png,
          snakemake.output.pdf, snakemake.log[0])
