from functools import partial

from coupledsgd.jobs.analysis import metric_tables
from coupledsgd.jobs.runtime import run_stage

# The job's worker processes (tables.group_pool) are spawned: each imports this file again as
# __mp_main__, and must not run the job a second time.
if __name__ == "__main__":
    run_stage(partial(metric_tables, threads=snakemake.threads), snakemake.params.predictions,
              snakemake.params.trajectories, dict(snakemake.output), dict(snakemake.params.settings),
              snakemake.log[0])
