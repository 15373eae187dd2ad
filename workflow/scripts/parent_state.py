from coupledsgd.stages import parent_state

settings = {**snakemake.params.run, "threads": snakemake.threads}
parent_state(snakemake.input.data, snakemake.output.state, settings, snakemake.log[0])
