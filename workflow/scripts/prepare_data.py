from coupledsgd.jobs.runtime import run_stage
from coupledsgd.jobs.stages import prepare_data

run_stage(prepare_data, snakemake.params.data, snakemake.output.data, snakemake.log[0])
