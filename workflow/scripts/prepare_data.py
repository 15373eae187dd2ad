from coupledsgd.errors import run_stage
from coupledsgd.stages import prepare_data

run_stage(prepare_data, snakemake.params.data, snakemake.output.data, snakemake.log[0])
