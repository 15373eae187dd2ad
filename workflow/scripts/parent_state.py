from coupledsgd.jobs.runtime import run_stage
from coupledsgd.jobs.stages import parent_state

settings = {**snakemake.params.run, "threads": snakemake.threads, "checkpoint": snakemake.config["checkpoint"],
            "jobs_per_device": snakemake.config["cuda"]["jobs_per_device"],
            # not a param: changing it must not rerun finished jobs
            "on_divergence": snakemake.config["on_divergence"]}
run_stage(parent_state, snakemake.input.data, snakemake.output.state, settings, snakemake.log[0])
