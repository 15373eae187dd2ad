"""Error barriers (linear mode connectivity) between the children of one parent (DESIGN.md section 3).

For two children with weights w_1 and w_2, the test error is measured at (1 - a) w_1 + a w_2 on a
grid of `points` values of `a` from 0 to 1, and

    barrier = max_a err(a) - (err(0) + err(1)) / 2.

Interpolating the BatchNorm running statistics of two networks does not give the statistics of the
interpolated network, so by default (`barrier.recompute_bn`) they are recomputed at every `a`,
the endpoints included, on the same fixed training batches:

- the batches are `data.batch_indices(bn_seed(seed), s, n_train, batch_size)` for s = 0 .. bn_batches-1,
  i.e. the first `bn_batches` minibatches of an order stream of their own. `bn_seed` hashes
  (experiment seed, "barrier-bn") the way `seeds.derive` hashes its roles, so the stream collides
  with no training stream, and every pair, condition, spawn step and parent of an experiment uses the
  same batches;
- no augmentation; the batch size is the training batch size (the statistics a BatchNorm layer
  normalised with during training are per-batch ones);
- each layer's running mean and variance become the plain average, over these batches, of the batch
  mean and of the (unbiased) batch variance of its input (momentum=None, PyTorch's cumulative
  average), as `torch.optim.swa_utils.update_bn` does.

Because of the recomputation, err(0) and err(1) can differ slightly from the children's own test
errors in the predictions tables (which use their training-time running statistics).
"""

from __future__ import annotations

import hashlib
import json
import time
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from . import data as D
from .artifacts import load_torch, provenance
from .files import atomic_path
from .errors import ArtifactError
from .models import build_model
from .stages import _setup, logger
from .training import predict

BN_ROLE = "barrier-bn"

# Key columns first (one row per pair and point a); `barrier` repeats the pair's barrier on each row.
SCHEMA = pa.schema([
    ("condition", pa.dictionary(pa.int8(), pa.string())),
    ("t", pa.int32()),
    ("parent", pa.int16()),
    ("child_a", pa.int16()),
    ("child_b", pa.int16()),
    ("alpha", pa.float64()),
    ("error", pa.float64()),
    ("barrier", pa.float64()),
])
KEY_COLUMNS = ("condition", "t", "parent", "child_a", "child_b")


def barrier_set(config: dict) -> list[tuple[str, int, int]]:
    """(condition, t, parent) of every ensemble whose children's barriers are measured (figure 3):
    each re-initialisation condition, and coupled-to-t-reset (the "no re-initialisation" reference:
    the same optimizer reset, nothing re-drawn), at every spawn step of reinit.steps, for every
    parent; only the conditions that config["conditions"] holds, and none without a re-initialisation
    condition. The reference is taken at the reinit steps even where spawn_steps lacks them (its
    children are then trained for this alone)."""
    from .config import conditions
    from .spawn import parse_condition

    reinit = [c for c in conditions(config) if parse_condition(c).side]
    chosen = ([c for c in conditions(config) if c == "coupled-to-t-reset"] + reinit) if reinit else []
    return [(c, t, p) for c in chosen for t in config["reinit"]["steps"]
            for p in range(config["ensemble"]["parents"])]


def interpolate(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """The model state dict (1 - alpha) * a + alpha * b.

    Floating-point parameters and buffers (BatchNorm running statistics included) are interpolated
    with `torch.lerp`, which returns a itself at alpha = 0, b at alpha = 1 and, where a and b agree,
    their common value at every alpha. Other tensors (the integer `num_batches_tracked`) are taken
    from `a`. The two states must hold the same names, shapes and dtypes.
    """
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))
        raise ValueError(f"states hold different tensors: {', '.join(diff[:5])}")
    alpha = float(alpha)
    out = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"{name}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
        if not a.is_floating_point() or alpha == 0.0:
            out[name] = a.clone()
        elif alpha == 1.0:
            out[name] = b.clone()
        else:
            out[name] = torch.lerp(a, b.to(a.device), alpha)
    return out


def bn_seed(seed: int) -> int:
    """The order seed of the fixed BatchNorm batches: a 63-bit hash of (experiment seed, "barrier-bn"),
    made as `seeds.derive` makes the seeds of its roles (which never include this one)."""
    key = f"{seed}/{BN_ROLE}/shared".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def bn_batch_indices(seed: int, n_train: int, batch_size: int, count: int) -> list[torch.Tensor]:
    """Training-example indices of the `count` fixed batches (first batches of the `bn_seed` order)."""
    order = bn_seed(seed)
    return [D.batch_indices(order, s, n_train, batch_size) for s in range(count)]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: D.DeviceData, batches: Sequence[torch.Tensor]) -> int:
    """Reset the running statistics of every BatchNorm layer of `model` and recompute them as the exact
    average over `batches` (index tensors into `data.x_train`; no augmentation).

    Forward passes run under no_grad with the BatchNorm layers in training mode and every other module
    in eval mode (no dropout noise), with momentum=None (cumulative average); the momenta are restored
    and the model is left in eval mode. Returns the number of BatchNorm layers (0: nothing to do).
    """
    layers = _batchnorms(model)
    model.eval()
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        device = data.x_train.device
        for idx in batches:
            model(data.x_train[idx.to(device)])
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return len(layers)


def _check_pair(state_a: dict, state_b: dict) -> None:
    for key in ("model_name", "in_shape", "num_classes"):
        normal = lambda v: list(v) if isinstance(v, (list, tuple)) else v
        if normal(state_a[key]) != normal(state_b[key]):
            raise ValueError(f"the two states differ in {key}: {state_a[key]!r} vs {state_b[key]!r}")


def error_path(state_a: dict, state_b: dict, data: D.DeviceData, points: int = 11,
               recompute_bn: bool = True, bn_batches: int = 10, batch_size: int = 128, seed: int = 0,
               eval_batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Test error of the interpolated network at `points` equally spaced alphas in [0, 1].

    `state_a` and `state_b` are run states (`Run.state_dict()`, as in a child's final.pt); their
    model weights are interpolated. With `recompute_bn`, BatchNorm statistics are recomputed at every
    alpha on `bn_batches` fixed training batches of `batch_size` drawn from `seed` (the experiment
    seed; see the module docstring). Returns (alphas, errors), both float64.
    """
    if points < 2:
        raise ValueError(f"points: {points} is fewer than the two endpoints")
    _check_pair(state_a, state_b)
    device = data.x_train.device
    model = build_model(state_a["model_name"], state_a["in_shape"], state_a["num_classes"], 0).to(device)
    batches = bn_batch_indices(seed, data.n_train, batch_size, bn_batches) if recompute_bn else []
    alphas = np.linspace(0.0, 1.0, points)
    errors = np.empty(points, dtype=np.float64)
    for i, alpha in enumerate(alphas):
        model.load_state_dict(interpolate(state_a["model"], state_b["model"], alpha))
        if recompute_bn:
            recompute_batchnorm(model, data, batches)
        wrong = predict(model, data.x_test, eval_batch_size).argmax(1).ne(data.y_test)
        errors[i] = wrong.double().mean().item()
    return alphas, errors


def barrier(errors: Sequence[float]) -> float:
    """max_a err(a) - (err(0) + err(1)) / 2 for the errors along a path from a = 0 to a = 1."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 1 or len(errors) < 2:
        raise ValueError("barrier: needs the errors at two or more points, endpoints included")
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


def _columns(condition: str, t: int, parent: int, rows: dict[str, list]) -> dict[str, pa.Array]:
    n = len(rows["alpha"])
    cond = pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), pa.array([condition]))
    return {"condition": cond,
            "t": pa.array(np.full(n, t, dtype=np.int32)),
            "parent": pa.array(np.full(n, parent, dtype=np.int16)),
            "child_a": pa.array(np.asarray(rows["child_a"], dtype=np.int16)),
            "child_b": pa.array(np.asarray(rows["child_b"], dtype=np.int16)),
            **{k: pa.array(np.asarray(rows[k], dtype=np.float64)) for k in ("alpha", "error", "barrier")}}


def _write(table: pa.Table, path: str | Path, metadata: dict[str, str]) -> None:
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=["condition"])


def _load_child(path, params: dict, child: int) -> dict:
    state = load_torch(path, what="child state")
    info = state.get("info", {})
    expected = {"condition": params["condition"], "parent": params["parent"], "child": child}
    found = {k: info.get(k) for k in expected}
    if found != expected or "model" not in state:
        raise ArtifactError(f"{path}: holds the final state of {found}, expected {expected}")
    return state


def barrier_table(data_path: str, final_paths: Sequence[str], output_path: str, params: dict,
                  log_path: str | None = None) -> None:
    """Error paths and barriers of every pair of children (a < b) of one (condition, t, parent).

    `final_paths[c]` is child c's final.pt. `params`: barrier (points, recompute_bn, bn_batches),
    seed, batch_size, device, threads, condition, t, parent (eval_batch_size optional). Writes a
    Parquet file with the columns of `SCHEMA`, one row per pair and alpha.
    """
    log = logger(log_path)
    device = _setup(params.get("threads", 1), params["device"], params.get("jobs_per_device", 1), log)
    settings = params["barrier"]
    data = D.load(data_path, device, augment=False)
    states = [_load_child(path, params, c) for c, path in enumerate(final_paths)]
    rows = {k: [] for k in ("child_a", "child_b", "alpha", "error", "barrier")}
    for a, b in combinations(range(len(states)), 2):
        clock = time.perf_counter()
        alphas, errors = error_path(states[a], states[b], data, settings["points"], settings["recompute_bn"],
                                    settings["bn_batches"], params["batch_size"], params["seed"],
                                    params.get("eval_batch_size", 1000))
        value = barrier(errors)
        n = len(alphas)
        rows["child_a"] += [a] * n
        rows["child_b"] += [b] * n
        rows["alpha"] += alphas.tolist()
        rows["error"] += errors.tolist()
        rows["barrier"] += [value] * n
        log(f"{params['condition']} t={params['t']} parent {params['parent']} children {a}-{b}: "
            f"barrier {value:.4f}, errors {' '.join(f'{e:.4f}' for e in errors)} "
            f"({time.perf_counter() - clock:.2f} s)")
    table = pa.table(_columns(params["condition"], params["t"], params["parent"], rows), schema=SCHEMA)
    meta = {**provenance(params, device), "coupledsgd.bn_seed": str(bn_seed(params["seed"]))}
    _write(table, output_path, meta)
    log(f"{len(states) * (len(states) - 1) // 2} pairs written to {output_path}")


def read_barriers(path: str | Path) -> pa.Table:
    """A per-(condition, t, parent) barrier table, checked against `SCHEMA`."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: barrier table not found") from None
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise ArtifactError(f"{path}: not a barrier table (columns {table.schema.names}, "
                            f"expected {SCHEMA.names} with their types)")
    return table


def concat_barriers(paths: Sequence[str], output_path: str, params: dict | None = None,
                    log_path: str | None = None) -> None:
    """Concatenate per-(condition, t, parent) barrier tables into one (the experiment's barriers.parquet)."""
    log = logger(log_path)
    tables = [read_barriers(p) for p in paths]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    table = table.unify_dictionaries().combine_chunks()
    meta = {**provenance(params or {}, (params or {}).get("device", "cpu")),
            "coupledsgd.inputs": json.dumps([str(p) for p in paths])}
    _write(table, output_path, meta)
    log(f"{len(paths)} barrier tables, {table.num_rows} rows written to {output_path}")

