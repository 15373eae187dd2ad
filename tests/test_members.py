"""k members trained as one network (coupledsgd.engine.members, training.train with k runs) equal the same
members trained alone, for every model in the registry.

float64, on this CPU: cnn1d and the CIFAR ResNets agree to rounding (a grouped convolution and a batched
head sum in another order than k solo ones, and the loss of k members is one reduction: up to about
1e-13 of a tensor's scale after 20 steps); resnet50 and the stacked ViT likewise, over fewer steps
(resnet50 costs ~1 s a step here). float32: the same rounding, amplified by training (NOTES: ~1e-6
after a step or two), so they are compared after 2 steps.
"""

import copy

import pytest
import torch

from coupledsgd.engine import data as D
from coupledsgd.engine.members import GroupedResNet50, member_network, named_tensors, stack_members, unstack_member
from coupledsgd.engine.models import MODELS, build_model
from coupledsgd.core.seeds import member_seeds, parent_seeds
from coupledsgd.core.conditions import parse_condition
from coupledsgd.engine.spawn import spawn
from coupledsgd.engine.training import SGD, Accel, Hparams, Run, predict, train

H = Hparams(steps=40, batch_size=32, lr=0.1)   # 8 steps per epoch on 256 examples
FLOAT64_TOL = 1e-12   # relative to the tensor's largest entry
FLOAT32_TOL = 1e-4
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
    train([parent], data, t)
    return [spawn(copy.deepcopy(parent), cond, member_seeds(0, cond, 0, c)) for c in range(k)]


def tensors(run: Run) -> dict[str, torch.Tensor]:
    out = dict(run.model.state_dict())
    out.update({f"momentum.{i}": b for i, b in enumerate(run.optimizer.buffers)})
    return out


def assert_close(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        scale = max(1.0, a[key].double().abs().max().item())
        diff = (a[key].double() - b[key].double()).abs().max().item() / scale
        assert diff <= tol, (key, diff)


@pytest.fixture(scope="module")
def mnist1d(mnist1d_path):
    data = D.load(mnist1d_path, augment=True)
    data.crop_pad, data.flip = 2, True  # exercise the per-member augmentation stream too
    return data


def random_images(n_train=48, n_test=20, size=8, seed=0) -> D.DeviceData:
    g = torch.Generator().manual_seed(seed)
    return D.DeviceData(torch.randn(n_train, 3, size, size, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                        torch.randn(n_test, 3, size, size, generator=g), torch.randint(0, 10, (n_test,), generator=g),
                        10, crop_pad=1, flip=True)


def solo_and_together(data, runs, until=None, accel=Accel()):
    solo = copy.deepcopy(runs)
    solo_traj = [train([r], data, until, evaluate=True)[0] for r in solo]
    together = train(runs, data, until, evaluate=True, accel=accel)
    return solo, solo_traj, together


@pytest.mark.parametrize("condition,augmented", [("no-coupling", False), ("coupled-to-t", True),
                                                 ("reinit-high-50", True)])
def test_cnn1d_members_together_equal_members_alone_in_float64(mnist1d, condition, augmented):
    data = as_dtype(mnist1d, torch.float64)
    if not augmented:
        data.crop_pad, data.flip = 0, False
    runs = members(data, condition, torch.float64, h=Hparams(steps=28, batch_size=32, lr=0.1))
    solo, solo_traj, traj = solo_and_together(data, runs)
    for s, f, ts, tf in zip(solo, runs, solo_traj, traj):
        assert f.step == s.step == s.end
        assert_close(tensors(s), tensors(f), FLOAT64_TOL)
        assert ts.steps == tf.steps and len(ts.steps) > 2
        assert (ts.as_array() == tf.as_array()).all()
        torch.testing.assert_close(tf.final_logits, predict(f.model, data.x_test), rtol=0, atol=1e-12)


# (model, image size, batch size, steps): 20 steps where a CPU step is cheap.
IMAGE_MODELS = [("resnet8", 8, 16, 20), ("resnet20", 8, 16, 20), ("resnet50", 16, 8, 3), ("vit", 16, 8, 20)]


@pytest.mark.parametrize("name,size,batch,steps", IMAGE_MODELS)
def test_image_models_together_equal_alone_in_float64(name, size, batch, steps):
    h = Hparams(steps=steps, batch_size=batch, lr=0.05)
    data = as_dtype(random_images(n_train=max(48, 2 * batch), size=size), torch.float64)
    runs = members(data, "coupled-to-t", torch.float64, t=1, name=name, h=h, k=2)
    solo, solo_traj, traj = solo_and_together(data, runs)
    for s, f, ts, tf in zip(solo, runs, solo_traj, traj):
        assert f.step == s.end
        assert_close(tensors(s), tensors(f), FLOAT64_TOL)
        assert ts.steps == tf.steps


def test_float32_members_together_match_alone_after_two_steps(mnist1d):
    runs = members(mnist1d, "coupled-to-t", torch.float32)
    solo, _, _ = solo_and_together(mnist1d, runs, until=10)
    for s, f in zip(solo, runs):
        assert_close(tensors(s), tensors(f), FLOAT32_TOL)


def test_members_stopped_and_continued_equal_uninterrupted(mnist1d):
    data = as_dtype(mnist1d, torch.float64)
    runs = members(data, "no-coupling", torch.float64, h=Hparams(steps=24, batch_size=32, lr=0.1), k=2)
    whole = copy.deepcopy(runs)
    train(whole, data)
    train(runs, data, 13)
    assert all(r.step == 13 for r in runs)
    train(runs, data)
    for w, r in zip(whole, runs):
        a, b = tensors(w), tensors(r)
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_coupled_members_start_equal_and_diverge(mnist1d):
    runs = members(mnist1d, "coupled-to-t", torch.float32, k=2)
    start = [tensors(r) for r in runs]
    assert all(torch.equal(start[0][key], start[1][key]) for key in start[0])
    train(runs, mnist1d)
    end = [tensors(r) for r in runs]
    weights = [key for key in end[0] if key.endswith("weight")]
    assert all((end[0][key] - end[1][key]).abs().max() > 1e-3 for key in weights)


def test_runs_that_do_not_share_hparams_or_step_are_refused(mnist1d):
    runs = members(mnist1d, "no-coupling", torch.float32, k=2)
    runs[1].step = 1
    with pytest.raises(ValueError, match="share start step"):
        train(runs, mnist1d)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_solo_tensor_is_a_block_of_the_member_network(name):
    in_shape = (1, 40) if name == "cnn1d" else (3, 16, 16)
    solos = [build_model(name, in_shape, 10, seed) for seed in (1, 2, 3)]
    net = member_network(name, in_shape, 10, 3, solos[0]).to_empty(device="cpu")
    states = [{**dict(m.named_parameters()), **dict(m.named_buffers())} for m in solos]
    for i, s in enumerate(states):  # members whose BatchNorm step counters differ (a re-initialised layer)
        for key in s:
            if key.endswith("num_batches_tracked"):
                s[key].fill_(5 * i)
    shared = stack_members(net, [{k: v.detach() for k, v in s.items()} for s in states])
    assert list(named_tensors(net)) == list(states[0])
    for i, s in enumerate(states):
        back = {k: torch.empty_like(v) for k, v in s.items()}
        unstack_member(net, i, 3, back, shared)
        for key in s:
            assert torch.equal(back[key], s[key]), key


def test_grouped_resnet50_with_one_member_is_the_registry_model():
    solo = build_model("resnet50", (3, 16, 16), 10, 0).double().eval()
    grouped = GroupedResNet50(3, 10, 1).double().eval()
    grouped.load_state_dict(solo.state_dict())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(solo(x), grouped(x))


def test_graph_step_logic_on_the_cpu_equals_the_eager_step(mnist1d):
    """Accel.graphs: warm-up steps that are undone, static buffers, the tensor learning rate. On the
    CPU the step is not captured, so this checks everything but the capture itself."""
    data = as_dtype(mnist1d, torch.float64)
    runs = members(data, "coupled-to-t", torch.float64, k=2)
    eager = copy.deepcopy(runs)
    train(eager, data, 20)
    train(runs, data, 20, accel=Accel(graphs=True))
    for e, g in zip(eager, runs):
        assert_close(tensors(e), tensors(g), FLOAT64_TOL)


def test_the_tensor_learning_rate_update_is_the_scalar_one_to_rounding():
    model = build_model("cnn1d", (1, 40), 10, 0).double()
    h = Hparams(steps=1, batch_size=1, lr=0.1)
    a, b = SGD(copy.deepcopy(model), h), SGD(copy.deepcopy(model), h)
    g = torch.Generator().manual_seed(0)
    for p, q in zip(a.params, b.params):
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        q.grad = p.grad.clone()
    a.step(0.1)
    b.step_lr_tensor(torch.tensor(0.1, dtype=torch.float64))
    for p, q in zip(a.params, b.params):
        torch.testing.assert_close(p, q, rtol=1e-15, atol=1e-16)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_step_loop_never_waits_for_the_host(graphs):
    data = random_images(n_train=640, size=32)
    data = D.DeviceData(data.x_train.cuda(), data.y_train.cuda(), data.x_test.cuda(), data.y_test.cuda(), 10, 4, True)
    h = Hparams(steps=50, batch_size=64, lr=0.05)
    runs = [Run.fresh("resnet20", data.in_shape, 10, h, parent_seeds(0, p), "cuda") for p in range(4)]
    torch.cuda.synchronize()
    accel = Accel(bf16=True, channels_last=True, graphs=graphs)
    train(runs, data, 10, accel=accel)  # kernels chosen, allocations made
    from coupledsgd.engine import training

    batches = training.MemberBatches(data, [r.seeds["order"] for r in runs], [r.seeds["aug"] for r in runs], 64)
    x, y = batches(10)  # epoch 1's plan, as the loop makes it at the epoch's first step
    members = training.Members(runs)
    forward = members.bind(accel)
    step = (training.GraphedStep(forward, members.optimizer, accel, members.state_tensors(), D.stack_channels(x), y)
            if graphs else training.EagerStep(forward, members.optimizer, accel))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation now raises
    try:
        loss_sum = torch.zeros(4, device="cuda")
        for s in range(10, 60):  # 5 epochs: each one's plan is made and copied under the check too
            x, y = batches(s)
            losses, _ = step(D.stack_channels(x), y, 0.05)
            loss_sum += losses
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss_sum).all()


@pytest.mark.cuda
@cuda
def test_cuda_graph_training_matches_eager_training(monkeypatch):
    # TF32 rounds each convolution to ~1e-3, differently for each algorithm cuDNN picks in and out
    # of a capture; in float32 the two agree to the rounding of the learning-rate product.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    data = random_images(n_train=256, size=32)
    data = D.DeviceData(data.x_train.cuda(), data.y_train.cuda(), data.x_test.cuda(), data.y_test.cuda(), 10, 4, True)
    h = Hparams(steps=3, batch_size=32, lr=0.05)
    runs = [Run.fresh("resnet8", data.in_shape, 10, h, parent_seeds(0, p), "cuda") for p in range(3)]
    eager = copy.deepcopy(runs)
    train(eager, data)
    train(runs, data, accel=Accel(graphs=True))
    for e, g in zip(eager, runs):
        assert_close(tensors(e), tensors(g), 1e-3)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name,k", [("resnet8", 1), ("resnet8", 3), ("vit", 1), ("vit", 3)])
def test_cuda_graph_captures_never_fall_back(name, k):
    # the cuda: defaults with graphs, three calls of train on the same runs as bench_gpu.py makes them
    data = random_images(n_train=256, size=16 if name == "vit" else 32)
    data = D.DeviceData(data.x_train.cuda(), data.y_train.cuda(), data.x_test.cuda(), data.y_test.cuda(), 10, 4, True)
    h = Hparams(steps=50, batch_size=32, lr=0.05)
    runs = [Run.fresh(name, data.in_shape, 10, h, parent_seeds(0, p), "cuda") for p in range(k)]
    lines = []
    for until in (2, 4, 6):
        train(runs, data, until, accel=Accel(bf16=True, channels_last=True, graphs=True), log=lines.append)
    assert [line for line in lines if "cuda.graphs" in line] == []


@pytest.mark.parametrize("name", ["resnet8", "vit"])
def test_members_train_in_channels_last_layout(name):
    # the cuda: defaults; the stacked ViT's weights are at most 3-d, so channels-last leaves them as they are
    data = random_images(n_train=64, size=16)
    h = Hparams(steps=2, batch_size=16, lr=0.05)
    runs = [Run.fresh(name, data.in_shape, 10, h, parent_seeds(0, p)) for p in range(2)]
    train(runs, data, accel=Accel(channels_last=True))
    assert all(r.step == 2 for r in runs)


@pytest.mark.parametrize("k", [1, 2])
def test_momentum_buffers_take_the_parameters_memory_format(k):
    # channels-last parameters with contiguous momentum would push the multi-tensor update off its
    # fast path on CUDA; a solo run's own buffers (k = 1) are converted in place of the old ones
    data = random_images(n_train=64, size=8)
    h = Hparams(steps=2, batch_size=16, lr=0.05)
    runs = [Run.fresh("resnet8", data.in_shape, 10, h, parent_seeds(0, p)) for p in range(k)]
    from coupledsgd.engine.training import Members

    members = Members(runs)
    members.bind(Accel(channels_last=True))
    pairs = list(zip(members.optimizer.params, members.optimizer.buffers))
    assert sum(not p.is_contiguous() for p, _ in pairs) >= 7  # the 4-d convolution weights
    assert all(p.stride() == b.stride() for p, b in pairs)
    assert all(torch.equal(b, torch.zeros_like(b)) for _, b in pairs)


def test_graph_capture_records_no_autograd_history_before_its_warm_up(mnist1d):
    """Autograd history of a parameter made before the warm-up (on CUDA: on the default stream) keeps
    the parameter's gradient accumulator bound to that stream through the capture, which then fails."""
    from torch.overrides import TorchFunctionMode
    from coupledsgd.engine import training

    class History(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.started, self.ops = False, []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not self.started and isinstance(out, torch.Tensor) and out.grad_fn is not None:
                self.ops.append(func.__name__)
            return out

    runs = members(mnist1d, "no-coupling", torch.float32, k=2)
    group = training.Members(runs)
    net, history = group.bind(Accel(graphs=True)), History()

    def forward(x):
        history.started = True
        return net(x)

    x, y = training.MemberBatches(mnist1d, [r.seeds["order"] for r in runs], [r.seeds["aug"] for r in runs], 32)(0)
    with history:
        training.GraphedStep(forward, group.optimizer, Accel(graphs=True), group.state_tensors(),
                             D.stack_channels(x), y)
    assert history.started and history.ops == []
