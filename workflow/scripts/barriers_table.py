from functools import partial

from coupledsgd.jobs.analysis import concat_barriers
from coupledsgd.jobs.runtime import run_stage

stage = partial(concat_barriers, weight_paths=list(snakemake.input.weights), weights_output=snakemake.output.weights,
                onset_output=snakemake.output.onset)
run_stage(stage, list(snakemake.input.tables), snakemake.output.table, dict(snakemake.params.items()),
          snakemake.log[0])
