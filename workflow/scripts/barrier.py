from coupledsgd.barriers import barrier_table

settings = {**dict(snakemake.params.items()), "threads": snakemake.threads}
barrier_table(snakemake.input.data, list(snakemake.input.finals), snakemake.output.table, settings,
              snakemake.log[0])
