"""The workflow's stages as library calls: each takes plain paths and settings, so a workflow script
only wires Snakemake's inputs, outputs and params to one of these functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.conditions import parse_condition
from ..core.errors import ArtifactError
from ..core.layout import resume_path
from ..core.registry import SYNTHETIC, dataset
from ..core.parquet import (
    BLEW_UP_KEY,
    CURVE_KEY,
    REINIT_PERCENT_KEY,
    SEEDS_KEY,
    STEPS_PER_EPOCH_KEY,
    provenance,
    write_diverged,
    write_predictions,
    write_trajectory,
)
from ..core.seeds import member_seeds, parent_seeds
from ..engine import data as D
from ..engine.checkpoints import load_torch, save_torch
from ..engine.resume import Resume
from ..engine.spawn import spawn
from ..engine.training import Accel, Hparams, Run, describe, predict, train
from .runtime import logger, setup


def prepare_data(settings: dict, output: str, log_path: str | None = None) -> None:
    """Decode the configured dataset once for the whole experiment."""
    log = logger(log_path)
    synthetic = (
        (dataset(settings), settings.get("like") or "cifar10", settings["seed"])
        if settings["name"] == SYNTHETIC
        else None
    )
    cache = D.prepare(
        settings["name"],
        output,
        settings["root"],
        settings["download"],
        settings["n_train"],
        settings.get("path"),
        settings.get("crop_pad") or 0,
        bool(settings.get("flip")),
        synthetic,
    )
    log(
        f"{settings['name']}: {len(cache['y_train'])} training and {len(cache['y_test'])} test examples, "
        f"{cache['num_classes']} classes, input {tuple(cache['x_train'].shape[1:])}"
    )


def _job_settings(params: dict) -> dict:
    """The settings a job's result depends on (not its thread count, GPU sharing, checkpoint cadence or
    what it does when a member diverges)."""
    return {k: v for k, v in params.items() if k not in ("threads", "checkpoint", "jobs_per_device", "on_divergence")}


def _resume(output: str | Path, params: dict, log, log_path: str | None = None) -> Resume:
    every = params["checkpoint"]
    resume = Resume(
        resume_path(output), _job_settings(params), every["every_steps"], every["every_seconds"], log, log_path
    )
    resume.catch_signals()
    return resume


def _check_parent_state(state: dict, path, params: dict, parent: int) -> None:
    info = state.get("info", {})
    expected = (params["model"]["name"], parent, params["t"], params["config_hash"])
    found = (state.get("model_name"), info.get("parent"), state.get("step"), info.get("config_hash"))
    if found != expected:
        raise ArtifactError(
            f"{path}: holds model {found[0]!r} parent {found[1]!r} at step {found[2]!r} of "
            f"config {found[3]!r}; this job needs model {expected[0]!r} parent "
            f"{expected[1]!r} at step {expected[2]!r} of config {expected[3]!r}"
        )


def parent_state(data_path: str, output: str, params: dict, log_path: str | None = None) -> None:
    """Train parent `p` from its initialisation to step `t` and save its full state, with strictly
    deterministic kernels: the states of one parent at different t lie on one trajectory.

    A parent whose training loss becomes non-finite before t stops the job with `on_divergence: stop`;
    with "skip" its state at t is a record (step, learning rate; no weights), and its children are
    recorded as diverged without training (`train_members`): it costs only them."""
    log = logger(log_path)
    device = setup(params["threads"], params["device"], params["jobs_per_device"], log, strict=True)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    resume = _resume(output, params, log, log_path)
    restored = resume.load(h, device)
    if restored:
        run = restored[0][0]
    else:
        run = Run.fresh(
            params["model"]["name"],
            data.in_shape,
            data.num_classes,
            h,
            parent_seeds(params["seed"], params["parent"]),
            device,
            params["model"].get("kwargs"),
        )
        run.info = {"parent": params["parent"], "config_hash": params["config_hash"]}
    train(
        [run],
        data,
        params["t"],
        log=log,
        checkpoint=resume,
        accel=Accel.for_device(device, params.get("cuda")),
        on_divergence=params.get("on_divergence", "stop"),
    )
    meta = provenance(_job_settings(params), device)
    if "diverged" in run.info:
        # the state at t of a parent that diverged before t: who it is, and when it diverged
        save_torch(
            {
                "model_name": run.model_name,
                "step": params["t"],
                "info": dict(run.info),
                "diverged": run.info["diverged"],
                "provenance": meta,
            },
            output,
        )
        log(
            f"parent {params['parent']} diverged at step {run.info['diverged']['step']}: its state at "
            f"{params['t']} records it, and its children there will be recorded as diverged"
        )
        return
    save_torch({**run.state_dict(), "provenance": meta}, output)
    log(f"parent {params['parent']} state at step {run.step} saved")


def _load_parents(parent_paths: dict[int, str], params: dict) -> dict[int, dict]:
    """The checked parent states at t by parent (none for conditions without a parent)."""
    states = {}
    for p, path in parent_paths.items():
        states[p] = load_torch(path, what="parent state")
        _check_parent_state(states[p], path, params, p)
    return states


def _start_member(
    data: D.DeviceData, parent: dict | None, params: dict, p: int, c: int, h: Hparams, device, log
) -> Run:
    """Member (p, c) at its first step: fresh from its own seeds, or spawned from its parent's state."""
    condition = parse_condition(params["condition"])
    seeds = member_seeds(params["seed"], condition, p, c)
    if condition.has_parent:
        run = spawn(Run.from_state(parent, h, device), condition, seeds)
        if "reinitialised" in run.info and c == 0:
            log(f"re-initialised modules: {', '.join(run.info['reinitialised'])}")
    else:
        run = Run.fresh(
            params["model"]["name"], data.in_shape, data.num_classes, h, seeds, device, params["model"].get("kwargs")
        )
        run.info = {"parent": p, "condition": condition.name, "config_hash": params["config_hash"]}
    run.info["child"] = c
    return run


def _write_member(run: Run, trajectory, data: D.DeviceData, outputs: dict, params: dict, device, log) -> None:
    """A trained member's test-set logits, correctness trajectory and final state (with provenance)."""
    h = run.hparams
    key = {"condition": params["condition"], "t": params["t"], "parent": run.info["parent"], "child": run.info["child"]}
    meta = {
        **provenance(_job_settings(params), device),
        SEEDS_KEY: json.dumps(run.seeds),
        STEPS_PER_EPOCH_KEY: str(D.steps_per_epoch(data.n_train, h.batch_size)),
    }
    if "reinit_percent" in run.info:
        meta[REINIT_PERCENT_KEY] = repr(float(run.info["reinit_percent"]))
    if "blew_up" in run.info:
        meta[BLEW_UP_KEY] = json.dumps(run.info["blew_up"], sort_keys=True)
    if "diverged" in run.info:
        # files that record the divergence and hold no result (no rows, no weights)
        record = run.info["diverged"]
        write_diverged(outputs["predictions"], key, record, meta)
        write_diverged(outputs["trajectory"], key, record, meta)
        save_torch({"diverged": record, "info": dict(run.info), "provenance": meta}, outputs["final"])
        log(f"{describe(run)} diverged at step {record['step']} (learning rate {record['lr']:.4g}): recorded")
        return
    logits = trajectory.final_logits
    logits = (logits if logits is not None else predict(run.model, data.x_test, h.eval_batch_size)).cpu().numpy()
    labels = data.y_test.cpu().numpy()
    write_predictions(outputs["predictions"], key, labels, logits, meta)
    curve = {
        name: [point[name] for point in trajectory.curve] for name in ("step", "lr", "train_loss", "train_accuracy")
    }
    write_trajectory(
        outputs["trajectory"], key, trajectory.steps, trajectory.as_array(), {**meta, CURVE_KEY: json.dumps(curve)}
    )
    save_torch({**run.state_dict(), "provenance": meta}, outputs["final"])
    log(f"{describe(run)} done: test accuracy {(logits.argmax(1) == labels).mean():.4f}")


def train_members(
    data_path: str, parent_paths: dict[int, str], outputs: list[dict], params: dict, log_path: str | None = None
) -> None:
    """Train the members (p, c) of one condition and spawn step listed in `params["members"]` as one
    network, each started fresh or spawned from its parent's state at t, and write each member's final
    state, test-set logits and correctness trajectory (`outputs[i]` for member i).

    A job of one member, of the k children of a parent, or of every member of (condition, t): the
    results are the same (bit-for-bit for one member; see `members` for several). The members whose
    parent state records that the parent diverged before t are recorded as diverged, not trained
    (`_write_orphan`); the others train as one network.
    """
    log = logger(log_path)
    device = setup(params["threads"], params["device"], params["jobs_per_device"], log)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    parents = _load_parents(parent_paths, params)  # one read per parent for all its children
    members = [(i, p, c) for i, (p, c) in enumerate(params["members"]) if "diverged" not in parents.get(p, {})]
    for i, (p, c) in enumerate(params["members"]):
        if "diverged" in parents.get(p, {}):
            _write_orphan(parents[p], p, c, outputs[i], params, device, log)
    if not members:
        return
    resume = _resume(outputs[members[0][0]]["final"], params, log, log_path)
    restored = resume.load(h, device)
    if restored:
        runs, trajectories = restored
    else:
        runs = [_start_member(data, parents.get(p), params, p, c, h, device, log) for _, p, c in members]
        trajectories = None
    log(
        f"{params['condition']} t={params['t']}: {len(runs)} member(s) "
        f"{', '.join(f'p{p}c{c}' for _, p, c in members)}, steps {runs[0].step} -> {runs[0].end}"
    )
    trajectories = train(
        runs,
        data,
        evaluate=True,
        log=log,
        trajectories=trajectories,
        checkpoint=resume,
        accel=Accel.for_device(device, params.get("cuda")),
        on_divergence=params.get("on_divergence", "stop"),
    )
    for run, trajectory, (i, _, _) in zip(runs, trajectories, members):
        _write_member(run, trajectory, data, outputs[i], params, device, log)


def _write_orphan(parent: dict, p: int, c: int, outputs: dict, params: dict, device, log) -> None:
    """The files of member (p, c), whose parent diverged before t: a record of the parent's divergence,
    as `_write_member` writes for a member that diverged itself, with `parent_diverged`."""
    key = {"condition": params["condition"], "t": params["t"], "parent": p, "child": c}
    record = {**parent["diverged"], "parent_diverged": True}
    meta = provenance(_job_settings(params), device)
    write_diverged(outputs["predictions"], key, record, meta)
    write_diverged(outputs["trajectory"], key, record, meta)
    info = {**parent["info"], "condition": params["condition"], "spawned_at": params["t"], "child": c}
    save_torch({"diverged": record, "info": info, "provenance": meta}, outputs["final"])
    log(
        f"{params['condition']} t={params['t']} parent {p} child {c}: its parent diverged at step "
        f"{record['step']}: recorded, not trained"
    )
