from coupledsgd.jobs.analysis import table_page
from coupledsgd.jobs.runtime import run_stage

run_stage(table_page, snakemake.params.name, snakemake.input.table, snakemake.output.page,
          snakemake.params.experiment, snakemake.log[0])
