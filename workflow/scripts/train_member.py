from coupledsgd.errors import run_stage
from coupledsgd.stages import train_member

settings = {**snakemake.params.run, "threads": snakemake.threads, "checkpoint": snakemake.config["checkpoint"]}
run_stage(train_member, snakemake.input.data, snakemake.input.get("parent"), dict(snakemake.output), settings,
          snakemake.log[0])
