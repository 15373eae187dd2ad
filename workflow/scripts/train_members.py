from coupledsgd.jobs.runtime import run_stage
from coupledsgd.jobs.stages import train_members

out = snakemake.output
outputs = [{"final": f, "predictions": p, "trajectory": t} for f, p, t in zip(out.final, out.predictions, out.trajectory)]
members = snakemake.params.run["members"]
parents = dict(zip(sorted({p for p, _ in members}), snakemake.input.get("parents", [])))
settings = {**snakemake.params.run, "threads": snakemake.threads, "checkpoint": snakemake.config["checkpoint"],
            "jobs_per_device": snakemake.config["cuda"]["jobs_per_device"],
            # not a param: changing it must not rerun finished jobs
            "on_divergence": snakemake.config["on_divergence"]}
run_stage(train_members, snakemake.input.data, parents, outputs, settings, snakemake.log[0])
