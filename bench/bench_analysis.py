"""The analysis stages at the paper's shapes: wall time and peak memory of the metrics, barriers-table,
claims and figure jobs on fabricated member files of a paper config.

The files are written the way a run writes them: `core.parquet.write_predictions` / `write_trajectory`
at the paths of `core.layout.Layout`, with the metadata a training job gives them (config hash, steps
per epoch, realised re-initialisation share, learning curve), for every member of `core.grid.members(config)`;
the barrier and weight-space tables with the barrier job's own columns (`jobs.barriers`) for
`core.grid.barrier_set` (the instability analysis included). The
logits have structure so that every metric does real work: a label signal whose strength varies by
example (accuracy about that of the paper's networks), noise shared by the children of one parent in
proportion to the coupling (more for coupled-to-t at later t, less for larger re-initialisations), and
trajectories whose correctness rises towards the final predictions and flips back now and then
(forgetting events).

Each stage runs in its own process, exactly as its workflow script calls it (`jobs.runtime.run_stage`
on the `jobs.analysis` function), one process per figure as Snakemake runs them; the wall time is the
process's, the peak memory its maximum resident set (`os.wait4`), CPU time its user + system seconds.

Usage:
  python bench/bench_analysis.py cifar10 [--groups G] [--dir DIR] [--stages metrics,barriers,curves,claims,figures]
  python bench/bench_analysis.py tinyimagenet ... [--baseline SRC]

`--groups G` keeps the first G (condition, t) groups of 15 members (a reduced shape for trying);
`--dir` keeps the fabricated files there and reuses them on the next run (else a temp folder, removed);
`--baseline SRC` first runs the metrics stage with the package at SRC (another version's `src` folder,
put first on PYTHONPATH) on the same files, then this checkout's, and reports both and their ratio: a
before-and-after in one run, on one machine load.
Targets on 2 cores: cifar10 <= 2 minutes and <= 2 GB, tinyimagenet <= 10 minutes and <= 6 GB.
Writes bench/results/bench_analysis_<shape>.json (reduced shapes: ..._<shape>_g<G>.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save  # noqa: E402

from coupledsgd.core import grid  # noqa: E402
from coupledsgd.core.conditions import parse_condition  # noqa: E402
from coupledsgd.core.config import SCHEMA, config_hash, validate  # noqa: E402
from coupledsgd.core.layout import Layout  # noqa: E402
from coupledsgd.core.parquet import (CURVE_KEY, REINIT_PERCENT_KEY, SEEDS_KEY, STEPS_PER_EPOCH_KEY,  # noqa: E402
                                     provenance, write_parquet, write_predictions, write_trajectory)
from coupledsgd.core.registry import DATASETS  # noqa: E402

SHAPES = {"cifar10": ("configs/cifar10-resnet20.yaml", 0.92, 120, 2000),
          "tinyimagenet": ("configs/tinyimagenet-vit.yaml", 0.45, 600, 6000)}  # config, accuracy, s, MB


# ---------------------------------------------------------------------------------------------------
# Fabrication


def coupling(condition: str, t: int) -> float:
    """The share of a child's logit noise it shares with its siblings (0: independent members)."""
    c = parse_condition(condition)
    if not c.has_parent:
        return 0.15 if condition == "coupled-order" else 0.0
    shared = 0.3 + 0.6 * (1 - math.exp(-t / 1500))
    if c.resets:
        shared *= 0.85
    return shared * (1 - c.percent / 100)


def evaluation_steps(config: dict, condition: str, t: int, spe: int) -> list[int]:
    """The evaluation points of a member (as `engine.training.evaluation_steps` plans them)."""
    c = parse_condition(condition)
    steps, every = config["training"]["steps"], config["training"]["eval_every"] or spe
    start = t if c.has_parent else 0
    end = t + steps if c.resets else steps
    return sorted(set(range(start, end, every)) | {end})


class Fabricator:
    """Draws the members' logits and trajectories for one config, from one seed."""

    def __init__(self, config: dict, accuracy: float, seed: int = 0):
        ds = DATASETS[config["data"]["name"]]
        self.config, self.n, self.classes = config, ds.n_test, ds.classes
        self.spe = ds.n_train // config["training"]["batch_size"]
        self.rng = np.random.default_rng(seed)
        self.labels = self.rng.integers(0, self.classes, self.n)
        # Per-example strength of the label signal: some examples are easy, some hopeless. The offset
        # sets the accuracy near the paper network's; the noise scale makes the members overconfident.
        self.signal = (self._offset(accuracy) + 1.5 * self.rng.standard_normal(self.n)).astype(np.float32)
        self.common = self.rng.standard_normal((self.n, self.classes), dtype=np.float32)
        self.onehot = np.zeros((self.n, self.classes), dtype=np.float32)
        self.onehot[np.arange(self.n), self.labels] = 1

    def _offset(self, accuracy: float) -> float:
        """The signal offset at which a member with unit noise reaches `accuracy` (bisection on a sample)."""
        rng = np.random.default_rng(1)
        z = rng.standard_normal((2000, self.classes)) * math.sqrt(1.25)
        s = 1.5 * rng.standard_normal(2000)
        lo, hi = -5.0, 10.0
        for _ in range(30):
            mid = (lo + hi) / 2
            acc = np.mean(np.argmax(z + (mid + s)[:, None] * (np.arange(self.classes) == 0), axis=1) == 0)
            lo, hi = (mid, hi) if acc < accuracy else (lo, mid)
        return (lo + hi) / 2

    def parent_noise(self) -> np.ndarray:
        return self.rng.standard_normal((self.n, self.classes), dtype=np.float32)

    def logits(self, shared: float, parent_noise: np.ndarray) -> np.ndarray:
        own = self.rng.standard_normal((self.n, self.classes), dtype=np.float32)
        noise = math.sqrt(shared) * parent_noise + math.sqrt(1 - shared) * own
        return 2.0 * (self.signal[:, None] * self.onehot + 0.5 * self.common + noise)

    def curve(self, steps: list[int]) -> dict:
        """A learning curve at the progress reports (the evaluation points after the first)."""
        at = np.asarray(steps[1:], dtype=float)
        loss = 5.3 * np.exp(-at / (20.0 * self.spe)) + 0.1 * self.rng.random(len(at))
        return {"step": steps[1:], "lr": (0.1 * np.ones(len(at))).tolist(), "train_loss": loss.tolist(),
                "train_accuracy": (1 - loss / 5.4).tolist()}

    def trajectory(self, final_correct: np.ndarray, steps: list[int]) -> np.ndarray:
        """(E, N) correctness: accuracy rising from chance over a few epochs to the final one, the
        examples right at the end right more often before, every example re-drawn at every point."""
        chance = 1.0 / self.classes
        final = final_correct.mean()
        acc = chance + (final - chance) * (1 - np.exp(-np.asarray(steps) / (3.0 * self.spe)))
        ease = final_correct + 0.8 * self.rng.standard_normal(self.n, dtype=np.float32)
        noisy = ease[None, :] + 0.6 * self.rng.standard_normal((len(steps), self.n), dtype=np.float32)
        rank = np.minimum(((1 - acc) * self.n).astype(int), self.n - 1)
        threshold = np.sort(noisy, axis=1)[np.arange(len(steps)), rank]
        out = noisy > threshold[:, None]
        out[-1] = final_correct
        return out


def fabricate(config: dict, accuracy: float, root: Path, groups: int | None) -> dict:
    """Write every member's files and the barrier tables; returns the paths and how long it took."""
    tick = time.perf_counter()
    fab = Fabricator(config, accuracy)
    layout = Layout(config["experiment"], results=str(root / "results"), logs_root=str(root / "logs"))
    chash = config_hash(config)
    members = grid.members(config)
    keys = list(dict.fromkeys((m.condition, m.t) for m in members))[:groups]
    members = [m for m in members if (m.condition, m.t) in keys]
    params = {"experiment": config["experiment"], "config_hash": chash, "seed": config["seed"]}
    base = {**provenance(params, "cpu"), STEPS_PER_EPOCH_KEY: str(fab.spe)}
    accuracy_of = {}
    noise = {}
    for m in members:
        if (m.condition, m.t, m.parent) not in noise:
            noise = {(m.condition, m.t, m.parent): fab.parent_noise()}
        logits = fab.logits(coupling(m.condition, m.t), noise[(m.condition, m.t, m.parent)])
        meta = {**base, SEEDS_KEY: json.dumps({"member": [m.parent, m.child]})}
        percent = parse_condition(m.condition).percent
        if percent:
            meta[REINIT_PERCENT_KEY] = repr(percent * (1 + 0.01 * fab.rng.standard_normal()))
        key = {"condition": m.condition, "t": m.t, "parent": m.parent, "child": m.child}
        correct = np.argmax(logits, axis=1) == fab.labels
        accuracy_of[m.key] = float(correct.mean())
        write_predictions(layout.predictions(m.condition, m.t, m.parent, m.child), key, fab.labels, logits, meta)
        steps = evaluation_steps(config, m.condition, m.t, fab.spe)
        write_trajectory(layout.trajectory(m.condition, m.t, m.parent, m.child), key, steps,
                         fab.trajectory(correct, steps), {**meta, CURVE_KEY: json.dumps(fab.curve(steps))})
    barriers = [b for b in grid.barrier_set(config) if (b[0], b[1]) in keys]
    for condition, t, parent in barriers:
        _barrier_table(layout.barrier(condition, t, parent), config, condition, t, parent, fab.rng, accuracy_of)
        _weights_table(layout.barrier_weights(condition, t, parent), config, condition, t, parent, fab.rng)
    return {"layout": layout, "members": members, "barriers": barriers, "seconds": time.perf_counter() - tick,
            "accuracy": float(np.mean(list(accuracy_of.values()))), "evaluations":
            sorted({len(evaluation_steps(config, m.condition, m.t, fab.spe)) for m in members})}


def _barrier_table(path, config, condition, t, parent, rng, accuracy_of) -> None:
    """One barrier job's table: for each pair of children, errors along the path with a bump in the
    middle that shrinks with the coupling (the columns and writer of `jobs.barriers`)."""
    from coupledsgd.jobs.barriers import SCHEMA, _columns  # the barrier job's own columns (imports torch)

    import pyarrow as pa

    points = config["barrier"]["points"]
    alphas = np.linspace(0.0, 1.0, points)
    rows = {k: [] for k in ("child_a", "child_b", "alpha", "error", "barrier")}
    children = config["ensemble"]["children"]
    for a, b in combinations(range(children), 2):
        ends = [1 - accuracy_of[f"{condition}/t{t}/p{parent}/c{c}"] for c in (a, b)]
        bump = (1 - coupling(condition, t)) * 0.5 * abs(0.6 + 0.1 * rng.standard_normal())
        errors = np.minimum(1.0, (1 - alphas) * ends[0] + alphas * ends[1] + bump * np.sin(np.pi * alphas))
        value = float(errors.max() - (errors[0] + errors[-1]) / 2)
        rows["child_a"] += [a] * points
        rows["child_b"] += [b] * points
        rows["alpha"] += alphas.tolist()
        rows["error"] += errors.tolist()
        rows["barrier"] += [value] * points
    table = pa.table(_columns(condition, t, parent, rows), schema=SCHEMA)
    write_parquet(table, path, provenance({"condition": condition, "t": t, "parent": parent}, "cpu"), ["condition"])


def _weights_table(path, config, condition, t, parent, rng) -> None:
    """One barrier job's weight-space table: distances that shrink with the coupling."""
    from coupledsgd.analysis.read import WEIGHTS_SCHEMA

    import pyarrow as pa

    pairs = list(combinations(range(config["ensemble"]["children"]), 2))
    scale = 1 - coupling(condition, t)
    rows = {"condition": [condition] * len(pairs), "t": [t] * len(pairs), "kind": ["same-parent"] * len(pairs),
            "parent_a": [parent] * len(pairs), "child_a": [a for a, _ in pairs], "parent_b": [parent] * len(pairs),
            "child_b": [b for _, b in pairs], "distance": (scale * (1 + 0.1 * rng.random(len(pairs)))).tolist(),
            "cosine": (1 - scale * rng.random(len(pairs))).tolist(),
            "travelled_a": (0.5 + rng.random(len(pairs))).tolist(), "travelled_b": (0.5 + rng.random(len(pairs))).tolist()}
    write_parquet(pa.Table.from_pydict(rows, schema=WEIGHTS_SCHEMA), path,
                  provenance({"condition": condition, "t": t, "parent": parent}, "cpu"), ["condition", "kind"])


# ---------------------------------------------------------------------------------------------------
# Stages


def rule_threads(rule: str) -> int:
    """The `threads:` of a workflow rule (workflow/rules/*.smk), 1 if it declares none."""
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        m = re.search(rf"^rule {rule}:\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), re.M)
        if m:
            found = re.search(r"^\s+threads:\s*(\d+)\s*$", m.group(1), re.M)
            return int(found.group(1)) if found else 1
    raise KeyError(f"no rule {rule} in workflow/rules")


class _TreeMemory:
    """The largest resident set of a process and its descendants together, sampled from /proc."""

    def __init__(self, pid: int, every: float = 0.2):
        import threading

        self.pid, self.every, self.peak_kb = pid, every, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self, pid: int) -> list[int]:
        try:
            kids = [int(k) for task in os.listdir(f"/proc/{pid}/task")
                    for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            return [pid]
        return [pid] + [p for k in kids for p in self._tree(k)]

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.peak_kb = max(self.peak_kb, sum(map(self._rss_kb, self._tree(self.pid))))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_process(code: str, cwd: Path, threads: int, src: str | None = None) -> dict:
    """Run `python -c code` with the thread settings Snakemake gives a job of `threads` threads (and
    the package at `src` first on PYTHONPATH, if given); its wall seconds, CPU seconds and peak
    resident set (MB): `peak_mb` the largest single process (`ru_maxrss`, which covers its worker
    processes one at a time, and the forked bench process's own before its exec: fabricate in a run of
    its own, `--stages ""`, for a clean one), `peak_tree_mb` the largest sum over it and its worker
    processes at once (sampled every 0.2 s from /proc). The CPU time includes the workers'."""
    tick = time.perf_counter()
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    tree = _TreeMemory(proc.pid)
    out = proc.stdout.read()
    tree.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - tick
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stage failed:\n{code[:300]} ...\n{out[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_mb": round(usage.ru_maxrss / 1024), "peak_tree_mb": round(tree.peak_kb / 1024),
            "threads": threads}  # ru_maxrss: KiB on Linux


def stage_code(stage: str, layout: Layout, fab: dict, config: dict, extra=None) -> str:
    """The Python a workflow script runs for `stage`, with the paths of this experiment."""
    ms, logs = fab["members"], Path(layout.logs)
    tables = {k: layout.table(k) for k in ("members", "ensembles", "pairs", "forgetting", "summary")}
    partial = None
    if stage == "metrics":
        args = ([layout.predictions(m.condition, m.t, m.parent, m.child) for m in ms],
                [layout.trajectory(m.condition, m.t, m.parent, m.child) for m in ms], tables,
                config["metrics"], str(logs / "metrics.log"))
        fn = "metric_tables"
    elif stage == "barriers":
        args = ([layout.barrier(*b) for b in fab["barriers"]], layout.table("barriers"),
                {"barrier": config["barrier"], "seed": config["seed"], "device": "cpu"}, str(logs / "barriers.log"))
        fn = "concat_barriers"
        partial = {"weight_paths": [layout.barrier_weights(*b) for b in fab["barriers"]],
                   "weights_output": layout.table("weights"), "onset_output": layout.table("onset")}
    elif stage == "curves":
        args = ([layout.trajectory(m.condition, m.t, m.parent, m.child) for m in ms], tables["forgetting"],
                layout.table("curves"), str(logs / "curves.log"))
        fn = "learning_curves"
    elif stage == "claims":
        inputs = {k: tables[k] for k in ("members", "ensembles", "pairs", "forgetting")}
        args = ({**inputs, "barriers": layout.table("barriers"), "onset": layout.table("onset")}, layout.claims,
                str(logs / "claims.log"))
        fn = "check_claims"
    else:  # a figure: extra is its name
        from coupledsgd.analysis.figures import FIGURES

        inputs = {t: layout.table(t) for t in FIGURES[extra].tables}
        args = (extra, inputs, layout.figure(extra, "png"), layout.figure(extra, "pdf"),
                str(logs / "figures" / f"{extra}.log"))
        fn = "run_figure"
    call = f"functools.partial({fn}, **{partial!r})" if partial else fn
    return (f"import functools\nfrom coupledsgd.jobs.analysis import {fn}\nfrom coupledsgd.jobs.runtime import run_stage\n"
            f"run_stage({call}, *{args!r})\n")


def run_stages(stages: list[str], layout: Layout, fab: dict, config: dict, cwd: Path,
               baseline: str | None = None) -> dict:
    Path(layout.logs).mkdir(parents=True, exist_ok=True)
    out = {}
    if baseline and "metrics" in stages:
        out["metrics_baseline"] = run_process(stage_code("metrics", layout, fab, config), cwd, rule_threads("metrics"),
                                              baseline)
        print(f"  metrics with the package at {baseline}: {out['metrics_baseline']}", flush=True)
    for stage in stages:
        if stage != "figures":
            out[stage] = run_process(stage_code(stage, layout, fab, config), cwd, rule_threads(stage))
            print(f"  {stage}: {out[stage]}", flush=True)
            continue
        from coupledsgd.analysis.figures import FIGURES

        per = {name: run_process(stage_code("figure", layout, fab, config, name), cwd, rule_threads("figure"))
               for name in FIGURES}
        out["figures"] = {"wall_s": round(sum(r["wall_s"] for r in per.values()), 2),
                          "cpu_s": round(sum(r["cpu_s"] for r in per.values()), 2),
                          "peak_mb": max(r["peak_mb"] for r in per.values()),
                          "slowest": max(per, key=lambda k: per[k]["wall_s"]), "each": per}
        print(f"  figures: {len(per)} jobs, {out['figures']['wall_s']} s in all, "
              f"peak {out['figures']['peak_mb']} MB", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--groups", type=int, default=None, help="keep the first G (condition, t) groups")
    ap.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the fabricated files here")
    ap.add_argument("--stages", default="metrics,barriers,curves,claims,figures", help='"" to fabricate only')
    ap.add_argument("--baseline", default=None, help="another version's src folder: its metrics stage first")
    args = ap.parse_args()
    config_path, accuracy, target_s, target_mb = SHAPES[args.shape]
    config = validate(yaml.safe_load((ROOT / config_path).read_text()), SCHEMA)
    config["device"] = "cpu"
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_analysis."))
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / f"fabricated-{args.shape}-{args.groups}.json"
    try:
        if stamp.exists():
            fab = {**json.loads(stamp.read_text()), "layout": Layout(config["experiment"], results=str(root / "results"), logs_root=str(root / "logs"))}
            fab["members"] = [grid.Member(*m) for m in fab["members"]]
            fab["barriers"] = [tuple(b) for b in fab["barriers"]]
            print(f"reusing the files in {root}")
        else:
            print(f"fabricating {args.shape} member files in {root} ...", flush=True)
            fab = fabricate(config, accuracy, root, args.groups)
            saved = {**fab, "members": [[m.condition, m.t, m.parent, m.child] for m in fab["members"]]}
            stamp.write_text(json.dumps({k: v for k, v in saved.items() if k != "layout"}))
        members = fab["members"]
        print(f"{len(members)} members, {DATASETS[config['data']['name']].n_test} examples x "
              f"{DATASETS[config['data']['name']].classes} classes, evaluations {fab['evaluations'][0]}-"
              f"{fab['evaluations'][-1]}, mean accuracy {fab['accuracy']:.3f}, {len(fab['barriers'])} barrier "
              f"tables (fabricated in {fab['seconds']:.0f} s)", flush=True)
        if not args.stages:
            return  # --stages "": fabricate only
        stages = run_stages(args.stages.split(","), fab["layout"], fab, config, root, args.baseline)
        measured = {k: v for k, v in stages.items() if k != "metrics_baseline"}
        total = sum(s["wall_s"] for s in measured.values())
        peak = max(s.get("peak_tree_mb", s["peak_mb"]) for s in measured.values())
        full = args.groups is None
        result = {"shape": args.shape, "config": config_path, "members": len(members),
                  "groups": len({(m.condition, m.t) for m in members}), "test_examples": DATASETS[config["data"]["name"]].n_test,
                  "classes": DATASETS[config["data"]["name"]].classes, "evaluations": fab["evaluations"],
                  "mean_member_accuracy": fab["accuracy"], "barrier_tables": len(fab["barriers"]),
                  "stages": stages, "total_wall_s": round(total, 1), "peak_mb": peak,
                  "target": f"<= {target_s} s and <= {target_mb} MB",
                  "met": (total <= target_s and peak <= target_mb) if full else None,
                  "load_average": os.getloadavg()}
        if "metrics_baseline" in stages and "metrics" in stages:
            before, after = stages["metrics_baseline"]["wall_s"], stages["metrics"]["wall_s"]
            result["metrics_before_after"] = {"baseline": args.baseline, "before_s": before, "after_s": after,
                                              "ratio": round(after / before, 3)}
            print(f"metrics stage: {before:.1f} s before, {after:.1f} s after (ratio {after / before:.2f})")
        print(f"total {total:.1f} s, peak {peak} MB (target {result['target']}"
              + (f": {'met' if result['met'] else 'missed'})" if full else ", reduced shape)"))
        save(f"bench_analysis_{args.shape}" + ("" if full else f"_g{args.groups}"), result)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
