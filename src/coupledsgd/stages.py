"""The workflow's stages as library calls: each takes plain paths and settings, so a workflow script
only wires Snakemake's inputs, outputs and params to one of these functions.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from . import data as D
from .artifacts import load_torch, provenance, save_torch, write_predictions, write_trajectory
from .errors import ArtifactError
from .resume import Resume
from .spawn import member_seeds, parent_seeds, parse_condition, spawn
from .training import Accel, Hparams, Run, predict, train


def logger(path: str | Path | None):
    """A line logger that writes (and flushes) to the job's log file, so a long run is seen moving."""
    stream = open(path, "a", buffering=1) if path else sys.stderr

    def log(line: str) -> None:
        stream.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    return log


def _setup(threads: int, device: str) -> torch.device:
    torch.set_num_threads(threads)
    if device == "cuda":
        # CPU kernels are deterministic already; on the CPU this call would only add 1.5 s of
        # imports (torch._inductor) to every job.
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(device)


def prepare_data(settings: dict, output: str, log_path: str | None = None) -> None:
    """Decode the configured dataset once for the whole experiment."""
    log = logger(log_path)
    cache = D.prepare(settings["name"], output, settings.get("root"), settings.get("download", False),
                      settings.get("n_train"))
    log(f"{settings['name']}: {len(cache['y_train'])} training and {len(cache['y_test'])} test examples, "
        f"{cache['num_classes']} classes, input {tuple(cache['x_train'].shape[1:])}")


def _job_settings(params: dict) -> dict:
    """The settings a job's result depends on (not its thread count or checkpoint cadence)."""
    return {k: v for k, v in params.items() if k not in ("threads", "checkpoint")}


def _resume(output: str | Path, params: dict, log) -> Resume:
    every = params.get("checkpoint") or {}
    return Resume(Path(output).with_suffix(".resume.pt"), _job_settings(params),
                  every.get("every_steps"), every.get("every_seconds", 60.0), log)


def _check_parent_state(state: dict, path, params: dict) -> None:
    info = state.get("info", {})
    expected = (params["model"]["name"], params["parent"], params["t"], params["config_hash"])
    found = (state.get("model_name"), info.get("parent"), state.get("step"), info.get("config_hash"))
    if found != expected:
        raise ArtifactError(f"{path}: holds model {found[0]!r} parent {found[1]!r} at step {found[2]!r} of "
                            f"config {found[3]!r}; this job needs model {expected[0]!r} parent "
                            f"{expected[1]!r} at step {expected[2]!r} of config {expected[3]!r}")


def parent_state(data_path: str, output: str, params: dict, log_path: str | None = None) -> None:
    """Train parent `p` from its initialisation to step `t` and save its full state."""
    device = _setup(params["threads"], params["device"])
    log = logger(log_path)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    resume = _resume(output, params, log)
    restored = resume.load(h, device)
    if restored:
        run = restored[0]
    else:
        run = Run.fresh(params["model"]["name"], data.in_shape, data.num_classes, h,
                        parent_seeds(params["seed"], params["parent"]), device)
        run.info = {"parent": params["parent"], "config_hash": params["config_hash"]}
    train(run, data, params["t"], log=log, checkpoint=resume, accel=Accel.for_device(device, params.get("cuda")))
    save_torch({**run.state_dict(), "provenance": provenance(_job_settings(params), device)}, output)
    resume.remove()
    log(f"parent {params['parent']} state at step {run.step} saved")


def _load_parent(parent_path: str | None, params: dict) -> dict | None:
    """The checked parent state at t, or None for conditions without a parent (no parent input)."""
    if parent_path is None:
        return None
    state = load_torch(parent_path, what="parent state")
    _check_parent_state(state, parent_path, params)
    return state


def _start_member(data: D.DeviceData, parent: dict | None, params: dict, h: Hparams, device, log) -> Run:
    """Member (p, c) at its first step: fresh from its own seeds, or spawned from its parent's state."""
    condition = parse_condition(params["condition"])
    p, c = params["parent"], params["child"]
    seeds = member_seeds(params["seed"], condition, p, c)
    if condition.has_parent:
        run = spawn(Run.from_state(parent, h, device), condition, seeds)
        if "reinitialised" in run.info:
            log(f"re-initialised modules: {', '.join(run.info['reinitialised'])}")
    else:
        run = Run.fresh(params["model"]["name"], data.in_shape, data.num_classes, h, seeds, device)
        run.info = {"parent": p, "condition": condition.name, "config_hash": params["config_hash"]}
    run.info["child"] = c
    return run


def _write_member(run: Run, trajectory, data: D.DeviceData, outputs: dict, params: dict, device, log) -> None:
    """A trained member's test-set logits, correctness trajectory and final state (with provenance)."""
    h = run.hparams
    key = {k: params[k] for k in ("condition", "t", "parent", "child")}
    meta = {**provenance(_job_settings(params), device), "coupledsgd.seeds": json.dumps(run.seeds),
            "coupledsgd.steps_per_epoch": str(D.steps_per_epoch(data.n_train, h.batch_size))}
    logits = trajectory.final_logits
    logits = (logits if logits is not None else predict(run.model, data.x_test, h.eval_batch_size)).cpu().numpy()
    labels = data.y_test.cpu().numpy()
    write_predictions(outputs["predictions"], key, labels, logits, meta)
    write_trajectory(outputs["trajectory"], key, trajectory.steps, trajectory.as_array(), meta)
    save_torch({**run.state_dict(), "provenance": meta}, outputs["final"])
    log(f"child {params['child']} done: test accuracy {(logits.argmax(1) == labels).mean():.4f}")


def train_member(data_path: str, parent_path: str | None, outputs: dict, params: dict,
                 log_path: str | None = None) -> None:
    """Start member (p, c) of a condition (fresh, or spawned from its parent's state at t), train it
    to the end, and write its final state, test-set logits and correctness trajectory."""
    device = _setup(params["threads"], params["device"])
    log = logger(log_path)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    resume = _resume(outputs["final"], params, log)
    restored = resume.load(h, device)
    run, trajectory = restored or (_start_member(data, _load_parent(parent_path, params), params, h, device, log),
                                   None)
    log(f"{params['condition']} t={params['t']} parent {params['parent']} child {params['child']}: "
        f"steps {run.step} -> {run.end}")
    trajectory = train(run, data, run.end, evaluate=True, log=log, trajectory=trajectory, checkpoint=resume,
                       accel=Accel.for_device(device, params.get("cuda")))
    _write_member(run, trajectory, data, outputs, params, device, log)
    resume.remove()


def train_children(data_path: str, parent_path: str | None, outputs: list[dict], params: dict,
                   log_path: str | None = None) -> None:
    """The k members of one (condition, t, parent) trained together as one fused model
    (`fused.train_fused`); each member's files are those `train_member` writes.

    A fused job keeps no in-job checkpoint: restarted, it trains its members again from their start.
    """
    from .fused import train_fused

    device = _setup(params["threads"], params["device"])
    log = logger(log_path)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    members = [{**params, "child": c} for c in range(len(outputs))]
    parent = _load_parent(parent_path, params)  # one read for all k children
    runs = [_start_member(data, parent, m, h, device, log) for m in members]
    log(f"{params['condition']} t={params['t']} parent {params['parent']}: {len(runs)} children fused, "
        f"steps {runs[0].step} -> {runs[0].end}")
    trajectories = train_fused(runs, data, evaluate=True, log=log)
    for run, trajectory, out, m in zip(runs, trajectories, outputs, members):
        _write_member(run, trajectory, data, out, m, device, log)
