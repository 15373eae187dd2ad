import sys
from pathlib import Path

from coupledsgd.analysis.figures import FIGURES
from coupledsgd.core.conditions import parse_condition
from coupledsgd.core.coerce import config_words, misread
from coupledsgd.core.config import (
    config_hash,
    job_shape,
    load_schema,
    needs_model_check,
    validate,
)
from coupledsgd.core.errors import ConfigError
from coupledsgd.core.files import unwritable
from coupledsgd.core.grid import Member, job_head, members
from coupledsgd.core.health import damaged, unfinished
from coupledsgd.core.layout import Layout
from coupledsgd.core.registry import ARRAYS
from coupledsgd.work import job_memory_mb

try:
    if workflow.is_main_process:
        # A cluster job's own Snakemake is handed the values as Snakemake read them: checked here.
        why = misread(
            config_words(sys.argv), workflow.config_settings.config, load_schema()
        )
        if why:
            raise ConfigError(why)
    # The package's schema (coupledsgd/core/config.schema.yaml), the one the jobs' defaults come from.
    config = validate(config, command_line=workflow.config_settings.config)
    if needs_model_check(config):
        # A model of the user's own (or any model on arrays data) is built and run on one batch
        # before any job; this imports torch, which planning a built-in experiment never does.
        from coupledsgd.engine.check import check_model

        check_model(config)
except ConfigError as e:
    sys.exit(f"Error in config: {e}")

# Every path of the experiment (coupledsgd.core.layout): called with wildcards for a rule's pattern,
# with numbers for one file. Benchmark files (wall seconds in column `s`, memory, CPU time) are
# written when a training or barrier job succeeds: `coupledsgd cost` and `coupledsgd status` read them.
L = Layout(config["experiment"])
# Snakemake makes its jobs' folders itself and ends in a traceback when it cannot: ask first.
BLOCKED = unwritable(L.folders())
if BLOCKED:
    sys.exit(f"Error: {BLOCKED}")
MEMBERS = members(config)
CHILDREN = range(config["ensemble"]["children"])
# Finished files gone missing, or jobs whose member set grew since they ran (the `all` rule asks for
# these); files cut short or overwritten stop the run before any job. Only where the run is planned:
# a cluster job's own Snakemake is handed its job.
UNFINISHED = unfinished(config, L) if workflow.is_main_process else []
if workflow.is_main_process:
    DAMAGED = damaged(config, L)
    if DAMAGED:
        sys.exit(
            f"Error: {DAMAGED[0]} is damaged (cut short or overwritten)"
            + (f", and {len(DAMAGED) - 1} more file(s)" if len(DAMAGED) > 1 else "")
            + "; delete it and run the same command again, which remakes it: "
            + f"rm {' '.join(DAMAGED)}"
        )
    # Snakemake sets its DAG settings after it reads the workflow: the command line says it here.
    forced = any(
        word.split("=")[0] in ("-R", "--forcerun", "-F", "--forceall", "-f", "--force")
        for word in sys.argv
    )
    if forced and UNFINISHED:
        # A forced job loses its outputs before it runs: stop before it would fail on a missing input.
        sys.exit(
            f"Error: {UNFINISHED[0]} is missing; run the plain command first, which remakes it "
            "(snakemake --cores all, with the same --configfile and --config), then force the stage"
        )


wildcard_constraints:
    cond="|".join(sorted({m.condition for m in MEMBERS}, key=len, reverse=True)),
    t=r"\d+",
    p=r"\d+",
    c=r"\d+",


def all_member_outputs(kind):
    """`kind` (final, predictions, trajectory) of every member of the grid."""
    return [L.member_file(kind, m.condition, m.t, m.parent, m.child) for m in MEMBERS]


def data_inputs(wildcards):
    """The arrays file of an arrays dataset: editing it reruns the experiment."""
    return (
        {"arrays": config["data"]["path"]} if config["data"]["name"] == ARRAYS else {}
    )


def job_outputs(members):
    """One output of each training job that trains any of `members`: its first member's
    predictions. A rule that reads many member files takes these as inputs and the member files as
    params: Snakemake checks each input file against every output pattern of the rule that might
    make it, and a training job of k members has 3k patterns, so naming each member file made
    planning grow as members x k. A job makes (or remakes, if one is missing) all its outputs
    together, so its first file stands for all of them."""
    heads = dict.fromkeys(job_head(config, m) for m in members)
    return [L.predictions(h.condition, h.t, h.parent, h.child) for h in heads]


def barrier_children(wildcards):
    """The children whose barriers a barrier job measures."""
    return [
        Member(wildcards.cond, int(wildcards.t), int(wildcards.p), c) for c in CHILDREN
    ]


def barrier_parent(wildcards):
    """The parent state a barrier job's children were spawned from: their weight-space distances
    are measured from it (none for a condition without a parent)."""
    if not parse_condition(wildcards.cond).has_parent:
        return []
    return L.parent_state(wildcards.p, wildcards.t)


def gpu_request():
    return 1 if config["device"] == "cuda" else 0


def run_settings(**extra):
    """Everything a training result depends on: changing any of it reruns the job."""
    return {
        "seed": config["seed"],
        "device": config["device"],
        "augment": config["data"]["augment"],
        "model": config["model"],
        "training": config["training"],
        "config_hash": config_hash(config),
        # The GPU path's settings change GPU results only: on the CPU they must not rerun anything.
        # How many jobs share a GPU changes no result.
        **(
            {
                "cuda": {
                    k: v for k, v in config["cuda"].items() if k != "jobs_per_device"
                }
            }
            if config["device"] == "cuda"
            else {}
        ),
        **extra,
    }


JOB_SHAPE = job_shape(config)
# what a training or barrier job holds: torch, the model and the dataset with its normalised copy
JOB_MEM_MB = job_memory_mb(config)


def member_slots():
    """The (parent, child) of each member a training job trains, as wildcards or numbers."""
    parents = (
        ["{p}"]
        if JOB_SHAPE != "condition"
        else [str(p) for p in range(config["ensemble"]["parents"])]
    )
    children = ["{c}"] if JOB_SHAPE == "member" else [str(c) for c in CHILDREN]
    return [(p, c) for p in parents for c in children]


def member_outputs(kind):
    """`kind` (final, predictions, trajectory) of each member the job trains, as patterns."""
    return [L.member_file(kind, "{cond}", "{t}", p, c) for p, c in member_slots()]


def job_members(wildcards):
    """[parent, child] of each member of this job, in the order of its outputs."""
    slot = lambda value, name: (
        int(getattr(wildcards, name)) if value == f"{{{name}}}" else int(value)
    )
    return [[slot(p, "p"), slot(c, "c")] for p, c in member_slots()]


def parent_inputs(wildcards):
    if not parse_condition(wildcards.cond).has_parent:
        return {}
    parents = sorted({p for p, _ in job_members(wildcards)})
    return {"parents": [L.parent_state(p, wildcards.t) for p in parents]}


# Snakemake opens a report caption by a fixed path (no wildcards), so the one caption template,
# figure.rst, renders the text of the figure's own caption file, carried in params.
FIGURE_CAPTIONS = {
    name: Path(workflow.source_path(f"../report/{name}.rst")).read_text()
    for name in FIGURES
}


def figure_inputs(wildcards):
    return {table: L.table(table) for table in FIGURES[wildcards.name][1]}


def figure_outputs():
    """Every figure, PNG and PDF."""
    return [L.figure(name, ext) for name in FIGURES for ext in ("png", "pdf")]
