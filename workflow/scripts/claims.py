from coupledsgd.jobs.analysis import check_claims
from coupledsgd.jobs.runtime import run_stage

run_stage(check_claims, dict(snakemake.input.items()), snakemake.output.table, snakemake.log[0])
