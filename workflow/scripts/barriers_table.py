from coupledsgd.jobs.analysis import concat_barriers
from coupledsgd.jobs.runtime import run_stage

run_stage(concat_barriers, list(snakemake.input.tables), snakemake.output.table, dict(snakemake.params.items()),
          snakemake.log[0])
