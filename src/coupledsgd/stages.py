"""The workflow's stages as library calls: each takes plain paths and settings, so a workflow script
only wires Snakemake's inputs, outputs and params to one of these functions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from . import data as D
from .artifacts import load_torch, provenance, save_torch, write_predictions, write_trajectory
from .errors import ArtifactError
from .spawn import member_seeds, parent_seeds, parse_condition, spawn
from .training import Hparams, Run, predict, train


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


def _check_run_state(state: dict, path, params: dict) -> None:
    expected = (params["model"]["name"], params["parent"])
    found = (state.get("model_name"), state.get("info", {}).get("parent"))
    if found != expected:
        raise ArtifactError(f"{path}: holds a state of model {found[0]!r} parent {found[1]!r}, "
                            f"expected model {expected[0]!r} parent {expected[1]!r}")


def parent_state(data_path: str, output: str, params: dict, log_path: str | None = None) -> None:
    """Train parent `p` from its initialisation to step `t` and save its full state."""
    device = _setup(params["threads"], params["device"])
    log = logger(log_path)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    run = Run.fresh(params["model"]["name"], data.in_shape, data.num_classes, h,
                    parent_seeds(params["seed"], params["parent"]), device)
    run.info = {"parent": params["parent"]}
    train(run, data, params["t"], log=log)
    save_torch(run.state_dict(), output)
    log(f"parent {params['parent']} state at step {run.step} saved")


def train_member(data_path: str, parent_path: str | None, outputs: dict, params: dict,
                 log_path: str | None = None) -> None:
    """Start member (p, c) of a condition (fresh, or spawned from its parent's state at t), train it
    to the end, and write its final state, test-set logits and correctness trajectory."""
    device = _setup(params["threads"], params["device"])
    log = logger(log_path)
    data = D.load(data_path, device, params["augment"])
    h = Hparams.from_config(params["training"])
    condition = parse_condition(params["condition"])
    p, c = params["parent"], params["child"]
    seeds = member_seeds(params["seed"], condition, p, c)
    if condition.has_parent:
        state = load_torch(parent_path, what="parent state")
        _check_run_state(state, parent_path, params)
        if state["step"] != params["t"]:
            raise ArtifactError(f"{parent_path}: holds step {state['step']}, expected {params['t']}")
        run = spawn(Run.from_state(state, h, device), condition, seeds)
        if "reinitialised" in run.info:
            log(f"re-initialised modules: {', '.join(run.info['reinitialised'])}")
    else:
        run = Run.fresh(params["model"]["name"], data.in_shape, data.num_classes, h, seeds, device)
        run.info = {"parent": p, "condition": condition.name}
    run.info["child"] = c
    log(f"{condition.name} t={params['t']} parent {p} child {c}: steps {run.step} -> {run.end}")
    trajectory = train(run, data, run.end, evaluate=True, log=log)
    key = {"condition": condition.name, "t": params["t"], "parent": p, "child": c}
    meta = {**provenance(params, device),
            "coupledsgd.steps_per_epoch": str(D.steps_per_epoch(data.n_train, h.batch_size))}
    logits = predict(run.model, data.x_test, h.eval_batch_size).cpu().numpy()
    labels = data.y_test.cpu().numpy()
    write_predictions(outputs["predictions"], key, labels, logits, meta)
    write_trajectory(outputs["trajectory"], key, trajectory.steps, trajectory.as_array(), meta)
    save_torch(run.state_dict(), outputs["final"])
    log(f"done: test accuracy {(logits.argmax(1) == labels).mean():.4f}")
