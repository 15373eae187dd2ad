from coupledsgd.stages import prepare_data

prepare_data(snakemake.params.data, snakemake.output.data, snakemake.log[0])
