from coupledsgd.jobs.runtime import run_stage
from coupledsgd.analysis.tables import metric_tables

run_stage(metric_tables, snakemake.input.predictions, snakemake.input.trajectories, dict(snakemake.output),
          dict(snakemake.params.settings), snakemake.log[0])
