import copy

import pytest
import torch

import coupledsgd.training as training
from coupledsgd import data as D
from coupledsgd.errors import ConfigError
from coupledsgd.models import build_model, count_parameters, parameter_units
from coupledsgd.spawn import member_seeds, parent_seeds, parse_condition, reinit_modules, spawn
from coupledsgd.training import Hparams, Run, learning_rate, train

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
def test_reinit_redraws_the_requested_fraction_from_the_right_end(parent, side, percent):
    _, state = parent
    run = child(state, f"reinit-{side}-{percent}", 1)
    chosen = run.info["reinitialised"]
    units = parameter_units(run.model)
    order = units if side == "low" else units[::-1]
    taken = [u for u in order if u[0] in chosen]
    assert [m for u in taken for m in u] == chosen and order[:len(taken)] == taken  # a prefix from that end
    modules = dict(run.model.named_modules())
    size = lambda u: sum(p.numel() for m in u for p in modules[m].parameters(recurse=False))
    total = count_parameters(run.model)
    covered = sum(size(u) for u in taken)
    assert covered >= percent / 100 * total > covered - size(taken[-1])
    fresh = dict(build_model("cnn1d", (1, 40), 10, member_seeds(0, parse_condition("reinit-low-1"), 0, 1)["reinit"])
                 .named_parameters())
    for name, p in run.model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if module in chosen:
            assert torch.equal(p, fresh[name]) and not torch.equal(p, state["model"][name]), name
        else:
            assert torch.equal(p, state["model"][name]), name
    assert all(b.abs().sum() == 0 for b in run.optimizer.buffers) and run.schedule_start == T


def test_reinit_modules_counts_whole_units():
    units = [["a"], ["b", "b_bn"], ["c"]]
    assert reinit_modules(units, [10, 30, 60], "low", 10) == ["a"]
    assert reinit_modules(units, [10, 30, 60], "low", 11) == ["a", "b", "b_bn"]
    assert reinit_modules(units, [10, 30, 60], "high", 60) == ["c"]
    assert reinit_modules(units, [10, 30, 60], "high", 61) == ["c", "b", "b_bn"]


@pytest.mark.parametrize("bad", ["coupled", "reinit-middle-10", "reinit-low-0", "reinit-high-101"])
def test_unknown_conditions_name_the_key(bad):
    with pytest.raises(ConfigError, match="conditions"):
        parse_condition(bad)
