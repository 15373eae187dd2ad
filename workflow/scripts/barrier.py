from functools import partial

from coupledsgd.jobs.barriers import barrier_table
from coupledsgd.jobs.runtime import run_stage

params = dict(snakemake.params.items())
finals = params.pop("finals")
settings = {**params, "threads": snakemake.threads,
            "jobs_per_device": snakemake.config["cuda"]["jobs_per_device"]}
stage = partial(barrier_table, weights_path=snakemake.output.weights, parent_path=snakemake.input.get("parent"))
run_stage(stage, snakemake.input.data, finals, snakemake.output.table, settings, snakemake.log[0])
