"""Error barriers (linear mode connectivity) between the children of one parent (docs/design.md, "Error barriers").

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
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import data as D
from .models import build_model
from .training import predict

BN_ROLE = "barrier-bn"


def interpolate(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
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
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


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


def error_path(
    state_a: dict,
    state_b: dict,
    data: D.DeviceData,
    points: int = 11,
    recompute_bn: bool = True,
    bn_batches: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    eval_batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
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
    model = build_model(
        state_a["model_name"], state_a["in_shape"], state_a["num_classes"], 0, state_a.get("model_kwargs")
    ).to(device)
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


# ---------------------------------------------------------------------------------------------------
# Weight space (Fort et al. 2019): distances between the children's final weights and their spawn state


def parameter_names(state: dict) -> list[str]:
    """The names of the trainable parameters of a run state's model (its `state["model"]` also holds
    buffers: BatchNorm statistics, which are no weights)."""
    model = build_model(state["model_name"], state["in_shape"], state["num_classes"], 0, state.get("model_kwargs"))
    return [name for name, _ in model.named_parameters()]


def flat_weights(model_state: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """The parameters `names` of a model state dict as one float64 vector, in that order."""
    return np.concatenate([model_state[n].detach().cpu().double().reshape(-1).numpy() for n in names])


def weight_distances(w_a: np.ndarray, w_b: np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> dict[str, float]:
    """Weight-space distances between two final weight vectors w_a, w_b and their start states s_a, s_b
    (the one spawn state of two children of one parent; each run's own initialisation for two
    independent runs):

    - distance: ||w_a - w_b|| / ((||s_a|| + ||s_b||) / 2), the L2 distance normalised by the spawn state's norm;
    - cosine: the cosine between the displacements w_a - s_a and w_b - s_b (nan where one is 0);
    - travelled_a, travelled_b: ||w - s|| / ||s|| of each, the distance travelled from its start.
    """
    da, db = w_a - s_a, w_b - s_b
    na, nb = float(np.linalg.norm(s_a)), float(np.linalg.norm(s_b))
    la, lb = float(np.linalg.norm(da)), float(np.linalg.norm(db))
    cosine = float(da @ db / (la * lb)) if la > 0 and lb > 0 else float("nan")
    return {
        "distance": float(np.linalg.norm(w_a - w_b)) / ((na + nb) / 2),
        "cosine": cosine,
        "travelled_a": la / na,
        "travelled_b": lb / nb,
    }


def start_weights(state: dict, names: Sequence[str], parent_state: dict | None) -> np.ndarray:
    """A child's start state as a weight vector: its parent's state at the spawn step (`parent_state`,
    a parent_state file), or for a run without a parent its initialisation, rebuilt from its init seed
    (models are initialised from the seed alone, on every device alike)."""
    if parent_state is not None:
        return flat_weights(parent_state["model"], names)
    model = build_model(
        state["model_name"], state["in_shape"], state["num_classes"], state["seeds"]["init"], state.get("model_kwargs")
    )
    return flat_weights(model.state_dict(), names)
