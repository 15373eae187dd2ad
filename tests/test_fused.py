"""Fused children (coupledsgd.fused): k runs trained as one batched model equal the same runs alone.

cnn1d, float64: bit-for-bit (torch.equal) in weights, BatchNorm buffers, momentum, step and test-set
correctness trajectories. float32: within FLOAT32_TOL (max abs difference of every weight, buffer
and momentum entry after 40 steps); on torch 2.14 CPU it is in fact exact too.
"""

import copy

import pytest
import torch

from coupledsgd import data as D
from coupledsgd.fused import train_fused
from coupledsgd.spawn import member_seeds, parent_seeds, parse_condition, spawn
from coupledsgd.training import SGD, Hparams, Run, predict, train

H = Hparams(steps=40, batch_size=32, lr=0.1)  # 8 steps per epoch on 256 examples
H64 = Hparams(steps=24, batch_size=32, lr=0.1)  # shorter, for the float64 runs
FLOAT32_TOL = 1e-4
# The vmap path (models other than cnn1d) is not bit-exact: vmap's grouped convolution may take
# another CPU kernel than the solo one (memory-format dependent), so float64 differs by rounding.
VMAP_FLOAT64_TOL = 1e-10
# ...and in float32 those rounding differences grow fast on this toy problem (random 8x8 images,
# 2x2 maps at batch 16 in the last stage: nearly degenerate BatchNorm channels): up to 3e-2 of a
# tensor's scale after 6 steps. float64 at 1e-10 is the real check of the semantics.
VMAP_FLOAT32_TOL = 1e-1
K = 3


def as_dtype(data: D.DeviceData, dtype) -> D.DeviceData:
    return D.DeviceData(data.x_train.to(dtype), data.y_train, data.x_test.to(dtype), data.y_test,
                        data.num_classes, data.crop_pad, data.flip)


def fresh(data, seeds, dtype, name="cnn1d", h=H) -> Run:
    run = Run.fresh(name, data.in_shape, data.num_classes, h, seeds)
    run.model.to(dtype)
    run.optimizer = SGD(run.model, h)
    return run


def members(data, condition: str, dtype, t=8, name="cnn1d", h=H, k=K) -> list[Run]:
    """k members of group 0 of `condition`, spawned from a parent trained to t where it has one."""
    cond = parse_condition(condition)
    if not cond.has_parent:
        return [fresh(data, member_seeds(0, cond, 0, c), dtype, name, h) for c in range(k)]
    parent = fresh(data, parent_seeds(0, 0), dtype, name, h)
    train(parent, data, t)
    return [spawn(copy.deepcopy(parent), cond, member_seeds(0, cond, 0, c)) for c in range(k)]


def tensors(run: Run) -> dict[str, torch.Tensor]:
    out = dict(run.model.state_dict())
    out.update({f"momentum.{i}": b for i, b in enumerate(run.optimizer.buffers)})
    return out


@pytest.fixture(scope="module")
def mnist1d(mnist1d_path):
    data = D.load(mnist1d_path, augment=True)
    data.crop_pad, data.flip = 2, True  # exercise the per-member augmentation stream too
    return data


def solo_and_fused(data, runs, until=None):
    solo = copy.deepcopy(runs)
    solo_traj = [train(r, data, r.end if until is None else until, evaluate=True) for r in solo]
    fused_traj = train_fused(runs, data, until, evaluate=True)
    return solo, solo_traj, fused_traj


@pytest.mark.parametrize("condition,augmented", [("no-coupling", False), ("coupled-to-t", True),
                                                 ("reinit-high-50", True)])
def test_float64_fused_members_equal_solo_members_bit_for_bit(mnist1d, condition, augmented):
    # augmented: a cropped MNIST-1D batch is laid out channels-last, a plain one is not (two kernels).
    data = as_dtype(mnist1d, torch.float64)
    if not augmented:
        data.crop_pad, data.flip = 0, False
    runs = members(data, condition, torch.float64, h=H64)
    solo, solo_traj, fused_traj = solo_and_fused(data, runs)
    for s, f, ts, tf in zip(solo, runs, solo_traj, fused_traj):
        assert f.step == s.step == s.end
        a, b = tensors(s), tensors(f)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        assert ts.steps == tf.steps and len(ts.steps) > 2
        assert (ts.as_array() == tf.as_array()).all()
        assert torch.equal(predict(s.model, data.x_test), predict(f.model, data.x_test))
        # The run's own optimizer is bound to its own model again.
        assert all(p is q for p, q in zip(f.optimizer.params, f.model.parameters()))


def test_float32_fused_members_match_solo_members_within_tolerance(mnist1d):
    runs = members(mnist1d, "coupled-to-t", torch.float32)
    solo, solo_traj, fused_traj = solo_and_fused(mnist1d, runs)
    for s, f, ts, tf in zip(solo, runs, solo_traj, fused_traj):
        a, b = tensors(s), tensors(f)
        for key in a:
            diff = (a[key].double() - b[key].double()).abs().max().item()
            assert diff < FLOAT32_TOL, (key, diff)
        assert ts.steps == tf.steps
        # Correctness may flip only for a handful of borderline test examples.
        assert (ts.as_array() != tf.as_array()).mean() < 0.01


def test_fused_training_stopped_and_continued_equals_uninterrupted(mnist1d):
    data = as_dtype(mnist1d, torch.float64)
    runs = members(data, "no-coupling", torch.float64, h=H64, k=2)
    whole = copy.deepcopy(runs)
    train_fused(whole, data)
    train_fused(runs, data, 13)
    assert all(r.step == 13 for r in runs)
    train_fused(runs, data)
    for w, r in zip(whole, runs):
        a, b = tensors(w), tensors(r)
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_coupled_members_start_equal_and_diverge(mnist1d):
    runs = members(mnist1d, "coupled-to-t", torch.float32, k=2)
    start = [tensors(r) for r in runs]
    assert all(torch.equal(start[0][key], start[1][key]) for key in start[0])
    train_fused(runs, mnist1d)
    end = [tensors(r) for r in runs]
    weights = [key for key in end[0] if key.endswith("weight")]
    assert all((end[0][key] - end[1][key]).abs().max() > 1e-3 for key in weights)


def test_runs_that_do_not_share_hparams_or_step_are_refused(mnist1d):
    runs = members(mnist1d, "no-coupling", torch.float32, k=2)
    runs[1].step = 1
    with pytest.raises(AssertionError):
        train_fused(runs, mnist1d)


def random_images(n_train=48, n_test=20, seed=0) -> D.DeviceData:
    g = torch.Generator().manual_seed(seed)
    return D.DeviceData(torch.randn(n_train, 1, 8, 8, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                        torch.randn(n_test, 1, 8, 8, generator=g), torch.randint(0, 10, (n_test,), generator=g),
                        10, crop_pad=1, flip=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_other_models_use_the_vmap_path_and_match_solo(dtype):
    h = Hparams(steps=6, batch_size=16, lr=0.05)  # 3 steps per epoch
    data = as_dtype(random_images(), dtype)
    runs = members(data, "coupled-to-t", dtype, t=2, name="resnet8", h=h, k=2)
    solo, solo_traj, fused_traj = solo_and_fused(data, runs)
    for s, f, ts, tf in zip(solo, runs, solo_traj, fused_traj):
        a, b = tensors(s), tensors(f)
        for key in a:
            # Relative to the tensor's largest entry (momentum of this toy problem reaches ~10).
            scale = max(1.0, a[key].double().abs().max().item())
            diff = (a[key].double() - b[key].double()).abs().max().item() / scale
            assert diff < (VMAP_FLOAT64_TOL if dtype == torch.float64 else VMAP_FLOAT32_TOL), (key, diff)
        assert ts.steps == tf.steps
