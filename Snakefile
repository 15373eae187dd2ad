# Coupled SGD: train parents to spawn steps t, spawn k children from each, and measure how much
# diversity (and ensemble gain) survives the coupling. See README.md.

# A --configfile replaces the default experiment rather than being laid over it key by key: keys it
# leaves out take the schema's defaults, never the values of config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/barriers.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/cluster.smk"


onsuccess:
    from coupledsgd.files import remove_finished_checkpoints

    # In-job checkpoints outlive their jobs (a stopped Snakemake reruns finished jobs from them);
    # once a run succeeds, those of finished jobs have served.
    remove_finished_checkpoints(EXP)


rule all:
    input:
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectories"),
        metrics=rules.metrics.output,
        barriers=rules.barriers.output.table,
        figures=figure_outputs(),
    default_target: True
