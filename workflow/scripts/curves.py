from coupledsgd.jobs.analysis import learning_curves
from coupledsgd.jobs.runtime import run_stage

run_stage(learning_curves, list(snakemake.params.trajectories), snakemake.input.forgetting,
          snakemake.output.table, snakemake.log[0])
