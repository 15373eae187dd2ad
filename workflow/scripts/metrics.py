from functools import partial

from coupledsgd.jobs.analysis import metric_tables
from coupledsgd.jobs.runtime import run_stage

run_stage(partial(metric_tables, threads=snakemake.threads), snakemake.params.predictions,
          snakemake.params.trajectories, dict(snakemake.output), dict(snakemake.params.settings), snakemake.log[0])
