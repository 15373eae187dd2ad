import copy

import pytest
import torch

import coupledsgd.engine.training as training
from coupledsgd.engine import data as D
from coupledsgd.core.errors import ConfigError
from coupledsgd.engine.models import build_model, count_parameters
from coupledsgd.engine.units import input_norms, parameter_units
from coupledsgd.core.seeds import member_seeds, parent_seeds
from coupledsgd.core.conditions import parse_condition
from coupledsgd.engine.spawn import redraw, reinit_modules, reinit_plan, spawn
from coupledsgd.engine.training import Hparams, Run, learning_rate, train

H = Hparams(steps=40, batch_size=32, lr=0.1)
T = 12


@pytest.fixture(scope="module")
def parent(mnist1d_path):
    data = D.load(mnist1d_path)
    run = Run.fresh("cnn1d", data.in_shape, data.num_classes, H, parent_seeds(0, 0))
    train([run], data, T)
    return data, run.state_dict()


def child(state, condition, c):
    cond = parse_condition(condition)
    return spawn(Run.from_state(copy.deepcopy(state), H), cond, member_seeds(0, cond, 0, c))


def test_seeds_follow_the_condition_table():
    p = parent_seeds(0, 1)
    nc = [member_seeds(0, parse_condition("no-coupling"), 1, c) for c in (0, 1)]
    co = [member_seeds(0, parse_condition("coupled-order"), 1, c) for c in (0, 1)]
    ct = [member_seeds(0, parse_condition("coupled-to-t"), 1, c) for c in (0, 1)]
    ri = [member_seeds(0, parse_condition("reinit-low-10"), 1, c) for c in (0, 1)]
    assert all(nc[0][r] != nc[1][r] for r in ("init", "order", "aug"))
    assert co[0]["init"] != co[1]["init"] and co[0]["order"] == co[1]["order"] == p["order"]
    assert ct[0]["init"] == ct[1]["init"] == p["init"] and ct[0]["order"] != ct[1]["order"]
    assert ct[0]["order"] != p["order"] and ri[0]["reinit"] != ri[1]["reinit"]
    assert parent_seeds(0, 0)["init"] != p["init"] and parent_seeds(1, 1)["init"] != p["init"]


def test_coupled_child_state_at_t_equals_the_parents(parent):
    _, state = parent
    run = child(state, "coupled-to-t", 0)
    assert run.step == T and run.schedule_start == 0 and run.end == H.steps
    for k, v in state["model"].items():
        assert torch.equal(run.model.state_dict()[k], v), k  # weights and BatchNorm buffers
    for a, b in zip(run.optimizer.buffers, state["optimizer"]["momentum_buffers"]):
        assert torch.equal(a, b) and b.abs().sum() > 0  # momentum carried over, not empty


def test_reset_child_has_zero_momentum_and_a_restarted_schedule(parent):
    _, state = parent
    run = child(state, "coupled-to-t-reset", 0)
    assert all(b.abs().sum() == 0 for b in run.optimizer.buffers)
    assert run.schedule_start == T and run.end == T + H.steps
    assert learning_rate(H, run.step - run.schedule_start) == H.lr
    for k, v in state["model"].items():
        assert torch.equal(run.model.state_dict()[k], v), k


def test_children_share_the_parents_batches_before_t_and_see_their_own_from_t(parent, monkeypatch):
    data, state = parent
    used = {}

    class Recording(D.MemberBatches):
        """The minibatches the training loop really draws, step by step."""

        def __call__(self, step):
            x, y = super().__call__(step)
            pos, b = step % self.spe, self.batch_size
            idx = self.perms[0, pos * b:(pos + 1) * b]
            assert torch.equal(idx, D.batch_indices(self.order_seeds[0], step, self.data.n_train, b))
            used.setdefault(current, {})[step] = idx
            return x, y

    monkeypatch.setattr(training, "MemberBatches", Recording)
    current = "parent"
    run = Run.fresh("cnn1d", data.in_shape, data.num_classes, H, parent_seeds(0, 0))
    train([run], data, T)
    assert run.state_dict()["model"].keys() == state["model"].keys()
    for c in (0, 1):
        current = c
        kid = child(run.state_dict(), "coupled-to-t", c)
        train([kid], data, kid.end)
    assert sorted(used["parent"]) == list(range(T))
    assert sorted(used[0]) == sorted(used[1]) == list(range(T, H.steps))
    assert all(not torch.equal(used[0][s], used[1][s]) for s in range(T, H.steps))
    # Coupled-order members share one order from step 0, independent members do not.
    shared = [member_seeds(0, parse_condition("coupled-order"), 0, c)["order"] for c in (0, 1)]
    assert torch.equal(D.batch_indices(shared[0], 5, 256, 32), D.batch_indices(shared[1], 5, 256, 32))


@pytest.mark.parametrize("side", ["low", "high"])
@pytest.mark.parametrize("percent", [10, 50])
def test_reinit_child_redraws_the_requested_share_from_the_right_end(parent, side, percent):
    _, state = parent
    run = child(state, f"reinit-{side}-{percent}", 1)
    info = run.info
    units = parameter_units(run.model)
    order = units if side == "low" else units[::-1]
    taken = [u for u in order if u[0] in info["reinitialised"]]
    assert [m for u in taken for m in u] == info["reinitialised"] and order[:len(taken)] == taken  # from that end
    fresh = dict(build_model("cnn1d", (1, 40), 10, member_seeds(0, parse_condition("reinit-low-1"), 0, 1)["reinit"])
                 .named_parameters())
    redrawn = 0
    for name, p in run.model.named_parameters():
        new, old = p == fresh[name], p == state["model"][name]
        assert torch.all(new | old) and not torch.any(new & old), name  # each value the fresh or the parent's
        redrawn += int(new.sum())
    total = count_parameters(run.model)
    assert info["reinit_percent"] == pytest.approx(100 * redrawn / total)
    modules = dict(run.model.named_modules())
    last = taken[-1]
    channel = sum(p.numel() for m in last for p in modules[m].parameters(recurse=False)) / \
        modules[last[0]].weight.shape[0]
    assert abs(redrawn - percent / 100 * total) <= channel
    assert all(b.abs().sum() == 0 for b in run.optimizer.buffers) and run.schedule_start == T
    assert Run.from_state(run.state_dict(), H).info["reinit_percent"] == info["reinit_percent"]  # checkpointed


def test_cnn1d_high_25_and_50_are_different_runs(parent):
    _, state = parent
    a, b = child(state, "reinit-high-25", 0), child(state, "reinit-high-50", 0)
    assert a.info["reinit_percent"] == pytest.approx(25, abs=0.5)
    assert b.info["reinit_percent"] == pytest.approx(50, abs=0.5)
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_reinit_plan_takes_whole_units_then_channels_of_the_next():
    sizes, channels = [10, 30, 60], [2, 3, 6]  # channels of 5, 10 and 10 parameters
    assert reinit_plan(sizes, channels, "low", 10) == [(0, 0, 2)]
    assert reinit_plan(sizes, channels, "low", 20) == [(0, 0, 2), (1, 0, 1)]
    assert reinit_plan(sizes, channels, "low", 24) == [(0, 0, 2), (1, 0, 1)]  # nearest: 20, not 30
    assert reinit_plan(sizes, channels, "low", 26) == [(0, 0, 2), (1, 0, 2)]
    assert reinit_plan(sizes, channels, "high", 60) == [(2, 0, 6)]
    assert reinit_plan(sizes, channels, "high", 20) == [(2, 4, 6)]  # the trailing channels
    assert reinit_plan(sizes, channels, "high", 75) == [(2, 0, 6), (1, 1, 3)]
    assert reinit_plan(sizes, channels, "high", 1) == [(2, 5, 6)]  # at least one channel
    assert reinit_plan(sizes, channels, "low", 100) == reinit_plan(sizes, channels, "high", 100)[::-1]
    units = [["a"], ["b", "b_bn"], ["c"]]
    assert reinit_modules(units, sizes, "low", 11) == ["a"]  # without channels, a unit is one channel
    assert reinit_modules(units, sizes, "low", 30) == ["a", "b", "b_bn"]
    assert reinit_modules(units, sizes, "high", 61, channels) == ["c"]  # 1 parameter short: no channel
    assert reinit_modules(units, sizes, "high", 66, channels) == ["c", "b", "b_bn"]


# Small inputs: every model in the registry takes them, and the parameters do not depend on them
# beyond cnn1d's classifier and the ViT's position embedding.
SHAPES = {"cnn1d": (1, 40), "resnet8": (1, 8, 8), "resnet20": (3, 16, 16), "resnet50": (3, 16, 16),
          "vit": (3, 16, 16)}
PERCENTS = [5, 10, 25, 50, 90]


def _noisy(model, sign):
    """A model whose every parameter and buffer has the sign `sign` (as a changed value after training):
    the parent's and the fresh model's never coincide, so each value tells where it came from."""
    g = torch.Generator().manual_seed(sign)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.abs_().add_(torch.rand(t.shape, generator=g) + 0.5).mul_(sign)
            else:
                t.fill_(sign)
    return model


@pytest.fixture(scope="module", params=list(SHAPES))
def pair(request):
    """A 'trained' parent and the fresh model its children re-draw from."""
    name = request.param
    return name, _noisy(build_model(name, SHAPES[name], 10, 0), 1), _noisy(build_model(name, SHAPES[name], 10, 1), -1)


def _redrawn(name, parent, fresh, side, percent):
    """The child's re-initialisation record and, per tensor, where it holds the fresh model's values
    (everything else checked bit-identical to the parent's)."""
    kid = copy.deepcopy(parent)
    rec = redraw(kid, fresh, side, percent)
    masks = {}
    f = {**dict(fresh.named_parameters()), **dict(fresh.named_buffers())}
    p = {**dict(parent.named_parameters()), **dict(parent.named_buffers())}
    for key, t in [*kid.named_parameters(), *kid.named_buffers()]:
        new, old = t == f[key], t == p[key]
        assert torch.all(new | old) and not torch.any(new & old), (name, key)
        masks[key] = new
    return rec, masks


@pytest.mark.parametrize("side", ["low", "high"])
def test_every_model_redraws_the_requested_share_to_within_one_channel(pair, side):
    name, parent, fresh = pair
    modules = dict(parent.named_modules())
    units = parameter_units(parent)
    params = set(dict(parent.named_parameters()))
    total = count_parameters(parent)
    walk = units if side == "low" else units[::-1]
    for percent in PERCENTS:
        rec, masks = _redrawn(name, parent, fresh, side, percent)
        mine = lambda u: [k for k in masks if k.rsplit(".", 1)[0] in u or ("" in u and "." not in k)]
        redrawn = sum(int(masks[k].sum()) for k in masks if k in params)
        assert rec.percent == pytest.approx(100 * redrawn / total), (name, side, percent)
        touched = [u for u in walk if any(masks[k].any() for k in mine(u))]
        assert walk[:len(touched)] == touched  # a run from that end: whole units, then the boundary one
        for u in touched[:-1]:
            assert all(masks[k].all() for k in mine(u)), (name, side, percent, u)
        boundary = touched[-1]
        # a norm of the unit's input (the ViT's pre-norm LayerNorms) is re-drawn with the whole unit only
        inputs = [m for m in boundary if m in input_norms(parent)]
        lead = modules[next(m for m in boundary if m not in inputs)]
        if isinstance(lead, torch.nn.MultiheadAttention):
            n = lead.embed_dim  # a channel is one feature of q, k and v together
        elif isinstance(lead, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            n = lead.weight.shape[0]
        else:  # class token, position embedding: features
            n = next(t for k, t in masks.items() if k in mine(boundary)).shape[-1]
        size = sum(p.numel() for m in boundary for p in modules[m].parameters(recurse=False))
        assert size % n == 0
        assert abs(redrawn - percent / 100 * total) <= size / n, (name, side, percent, boundary)
        if not all(masks[k].all() for k in mine(boundary)):
            assert not any(masks[k].any() for k in mine(inputs)), (name, side, percent, inputs)
            boundary = [m for m in boundary if m not in inputs]
            rows = rec.channels[boundary[0]]
            assert all(rec.channels[m] == rows for m in boundary) and not set(inputs) & set(rec.channels)
            assert (rows[0] == 0) if side == "low" else (rows[1] == n)
            for key in mine(boundary):
                mask, t = masks[key], key.rsplit(".", 1)[1]
                if t == "num_batches_tracked":
                    assert not mask.any()  # a counter of the whole layer: the parent's
                    continue
                # output rows of a layer, features (the last dimension) of a norm or an embedding
                layer = isinstance(modules[key.rsplit(".", 1)[0]], (torch.nn.Conv1d, torch.nn.Conv2d,
                                                                    torch.nn.Linear, torch.nn.MultiheadAttention))
                dim = 0 if layer else mask.dim() - 1
                per_row = mask.movedim(dim, 0).reshape(mask.shape[dim], -1)
                assert torch.all(per_row.all(1) | ~per_row.any(1)), key  # whole channels only
                expect = torch.zeros(mask.shape[dim], dtype=torch.bool)
                for off in range(0, mask.shape[dim], n):
                    expect[off + rows[0]:off + rows[1]] = True  # q, k and v rows alike for attention
                assert torch.equal(per_row.all(1), expect), key


def test_low_and_high_never_share_a_parameter_below_half(pair):
    name, parent, fresh = pair
    for percent in [p for p in PERCENTS if p < 50] + [49.9]:
        _, low = _redrawn(name, parent, fresh, "low", percent)
        _, high = _redrawn(name, parent, fresh, "high", percent)
        assert not any(torch.any(low[k] & high[k]) for k in low), (name, percent)


@pytest.mark.parametrize("bad", ["coupled", "reinit-middle-10", "reinit-low-0", "reinit-high-101"])
def test_unknown_conditions_name_the_key(bad):
    with pytest.raises(ConfigError, match="conditions"):
        parse_condition(bad)
