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
include: "workflow/rules/claims.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster.smk"


onsuccess:
    from coupledsgd.core.files import remove_finished_checkpoints

    # In-job checkpoints outlive their jobs (a stopped Snakemake reruns finished jobs from them);
    # once a run succeeds, those of finished jobs have served.
    remove_finished_checkpoints(L.exp)
    members_table = Path(rules.metrics.output.members)
    if members_table.exists():
        from coupledsgd.jobs.analysis import run_warnings

        for line in run_warnings(members_table):
            print(line, file=sys.stderr)


# Every input named by its path, none by `rules.<name>.output`: a rule that refers to another rule's
# output has Snakemake look each of its input files up among those references, hashing the whole
# input list each time, which made planning quadratic in the members. One file of each training job
# (job_outputs) is a target, so a run remakes a job whose first file is missing even when the tables
# are up to date (Snakemake remakes a missing intermediate file only for a job that needs to run);
# so is any other file of a job that is missing (the job ran for fewer members, or it was deleted).
rule all:
    default_target: True
    input:
        jobs=job_outputs(MEMBERS),
        # member files and parent states missing from a finished run (core.health.unfinished)
        unfinished=UNFINISHED,
        metrics=[
            L.table(name)
            for name in ("members", "ensembles", "pairs", "forgetting", "summary")
        ],
        barriers=[L.table(name) for name in ("barriers", "weights", "onset")],
        curves=L.table("curves"),
        claims=L.claims,
        pages=[L.table_page(name) for name in ("claims", "summary")],
        figures=figure_outputs(),
