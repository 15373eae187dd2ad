from coupledsgd.stages import train_member

settings = {**snakemake.params.run, "threads": snakemake.threads}
train_member(snakemake.input.data, snakemake.input.get("parent"), dict(snakemake.output), settings,
             snakemake.log[0])
