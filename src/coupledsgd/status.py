"""Where a run of one experiment stands: members done, running and left per condition and t, the
time its finished jobs spent, and an estimate of the time left.

    coupledsgd status --configfile configs/cifar10-resnet20.yaml
    python -m coupledsgd.status --configfile configs/cifar10-resnet20.yaml     (the same)

As with snakemake, a --configfile replaces config.yaml (the schema fills in the keys it leaves out).
Run it from the folder you run snakemake in, while the run goes on or after it stopped.

- done: the member's test-set predictions (results/{exp}/predictions/.../cK.parquet) exist, which its
  job writes last but one, atomically;
- running: not done, and its job's log or its in-job checkpoint (children/.../final.resume.pt, saved
  every minute or so) was modified in the last --active seconds (default 600): a job that writes
  neither for that long is taken as stopped;
- left: the rest (a stopped member with a checkpoint continues from it when the run is restarted).

Time spent: the wall-clock seconds of every benchmark file under results/{exp}/benchmarks (one per
finished job). ETA: the member-steps of the members not done, at the member-steps per second the
finished train_members jobs ran at, for one job at a time; jobs that run side by side divide it.
Parent states and barrier jobs are left out of the ETA: `coupledsgd cost` projects every job kind.

No torch here: it reads the config, the file tree and the benchmark files only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from .cost import schema_path
from .core.config import conform, job_shape
from .core.errors import ConfigError
from .core.grid import conditions, spawn_steps_of, training_jobs
from .core.layout import Layout, resume_path
from .work import benchmark_seconds, member_jobs, member_span


def load_config(path: str | Path, schema=None) -> dict:
    """The config with the schema's defaults filled in, checked against the schema (`conform`): not the
    checks of the machine that runs the jobs (cores, device, data), which this one need not be."""
    return conform(yaml.safe_load(Path(path).read_text()) or {}, schema)


def _recent(paths, since: float) -> bool:
    for path in paths:
        try:
            if path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:
            pass
    return False


def member_states(
    config: dict,
    results: str | Path = "results",
    logs: str | Path = "logs",
    active: float = 600.0,
    now: float | None = None,
) -> dict:
    """{Member: "done" | "running" | "left"} for every member of the grid."""
    layout = Layout(config["experiment"], results=str(results), logs_root=str(logs))
    since = (time.time() if now is None else now) - active
    shape = job_shape(config)
    states = {}
    for job in training_jobs(config):
        m = job[0]
        log = Path(layout.job_log(shape, m.condition, m.t, m.parent, m.child))
        for m in job:
            where = (m.condition, m.t, m.parent, m.child)
            if Path(layout.predictions(*where)).exists():
                states[m] = "done"
            elif _recent([log, Path(resume_path(layout.final(*where)))], since):
                states[m] = "running"
            else:
                states[m] = "left"
    return states


def spent_seconds(config: dict, results: str | Path = "results") -> tuple[float, int]:
    """(wall-clock seconds, jobs) over every benchmark file of the experiment."""
    files = sorted(Path(Layout(config["experiment"], results=str(results)).benchmarks).rglob("*.tsv"))
    seconds = [s for s in map(benchmark_seconds, files) if s is not None]
    return sum(seconds), len(seconds)


def member_step_rate(config: dict, results: str | Path = "results") -> float | None:
    """Member-steps per second of the finished train_members jobs (None before any has finished)."""
    steps = seconds = 0.0
    for job in member_jobs(config, Layout(config["experiment"], results=str(results))):
        s = benchmark_seconds(job.benchmark) if job.kind == "train_members" else None
        if s is not None:
            seconds += s
            steps += job.member_steps
    return steps / seconds if seconds and steps else None


def report(
    config: dict,
    results: str | Path = "results",
    logs: str | Path = "logs",
    active: float = 600.0,
    now: float | None = None,
) -> str:
    states = member_states(config, results, logs, active, now)
    exp = Layout(config["experiment"], results=str(results)).exp
    lines = [
        f"experiment {config['experiment']} ({exp}): members per condition and t",
        f"  {'condition':<22} {'t':>7} {'done':>6} {'running':>8} {'left':>6}",
    ]
    for cond in conditions(config):
        for t in spawn_steps_of(config, cond):
            row = [s for m, s in states.items() if m.condition == cond and m.t == t]
            lines.append(f"  {cond:<22} {t:>7} {row.count('done'):>6} {row.count('running'):>8} {row.count('left'):>6}")
    done, running = sum(s == "done" for s in states.values()), sum(s == "running" for s in states.values())
    lines.append(
        f"  {'all':<22} {'':>7} {done:>6} {running:>8} {len(states) - done - running:>6}   of {len(states):,} members"
    )
    seconds, jobs = spent_seconds(config, results)
    lines.append(f"time spent: {_duration(seconds)} of job wall-clock time in {jobs:,} finished jobs (benchmark files)")
    left_steps = sum(
        end - start for m, s in states.items() if s != "done" for start, end in [member_span(config, m.condition, m.t)]
    )
    rate = member_step_rate(config, results)
    if not left_steps:
        lines.append("ETA: every member is done")
    elif rate is None:
        lines.append(f"ETA: unknown until a training job finishes ({left_steps:,} member-steps left)")
    else:
        lines.append(
            f"ETA: {_duration(left_steps / rate)} for one job at a time ({left_steps:,} member-steps "
            f"left at a measured {rate:,.1f} member-steps/s; jobs side by side divide it)"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coupledsgd status",
        description=__doc__.split("\n\n")[0],
        epilog="example:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--configfile", default="config.yaml", help="experiment config (default: config.yaml)")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument("--logs", default="logs", help="logs folder (default: logs)")
    parser.add_argument(
        "--active",
        type=float,
        default=600.0,
        help="a job whose log or checkpoint changed in the last ACTIVE seconds is running (default 600)",
    )
    parser.add_argument("--schema", default=None, help="config schema (default: the package's own)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.configfile, schema_path(args.schema))
        print(report(config, args.results, args.logs, args.active))
    except ConfigError as e:
        print(f"Error in config {args.configfile}: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


USAGE = "usage: coupledsgd {status,cost} [options]   (coupledsgd COMMAND --help for its options)"
HELP = f"""{USAGE}

Reports on an experiment of the workflow, without torch; run it in the folder you run snakemake in.

commands:
  status   where a run stands: members done, running and left per condition and spawn step, the
           time its finished jobs spent, and an estimate of the time left
  cost     what an experiment costs before it runs (trainings, SGD steps, images, device-hours,
           disk) and, once jobs have finished, what they spent and what the rest will take

examples:
  coupledsgd status --configfile configs/cifar10-resnet20.yaml
  coupledsgd cost configs/cifar10-resnet20.yaml --images-per-second 9000
"""


def cli(argv: list[str] | None = None) -> int:
    """The `coupledsgd` command: `coupledsgd status ...`, `coupledsgd cost ...`."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"status": main, "cost": lambda a: __import__("coupledsgd.cost", fromlist=["main"]).main(a)}
    if argv and argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    if not argv or argv[0] not in commands:
        unknown = f"coupledsgd: unknown command {argv[0]!r}\n" if argv else ""
        print(f"{unknown}{USAGE}", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
