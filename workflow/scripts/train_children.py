from coupledsgd.errors import run_stage
from coupledsgd.stages import train_children

out = snakemake.output
outputs = [{"final": f, "predictions": p, "trajectory": t} for f, p, t in zip(out.final, out.predictions, out.trajectory)]
settings = {**snakemake.params.run, "threads": snakemake.threads}
run_stage(train_children, snakemake.input.data, snakemake.input.get("parent"), outputs, settings, snakemake.log[0])
