from coupledsgd.barriers import concat_barriers

concat_barriers(list(snakemake.input.tables), snakemake.output.table, dict(snakemake.params.items()), snakemake.log[0])
