"""Stock PyTorch models given by import path, unmodified: a pre-norm nn.TransformerEncoder with a class
token and a position embedding, GRU and LSTM classifiers, a CNN with Dropout2d (examples/models.py) and
torchvision's ResNet-18. Their re-initialisation units found by tracing, the realised shares against
hand counts, dropout drawn from the members' seeded streams (deterministic, resumable), members as one
network, and the whole workflow through `snakemake` with every condition."""

import copy
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fixtures import copy_workflow

from coupledsgd.core.conditions import parse_condition
from coupledsgd.core.config import SCHEMA, validate
from coupledsgd.core.errors import ConfigError
from coupledsgd.core.parquet import REINIT_PERCENT_KEY
from coupledsgd.core.seeds import member_seeds, parent_seeds
from coupledsgd.engine.check import check_model
from coupledsgd.engine.data import DeviceData
from coupledsgd.engine.models import build_model, count_parameters
from coupledsgd.engine.spawn import spawn
from coupledsgd.engine.training import SGD, Hparams, Run, train
from coupledsgd.engine.units import example_batch, parameter_units

ROOT = Path(__file__).resolve().parents[1]
SIGNAL, IMAGE, RESNET = (1, 16), (1, 8, 8), (3, 32, 32)
L0, L1 = "encoder.layers.0", "encoder.layers.1"

# name, kwargs, input shape, classes, parameters counted by hand, and the parameters of one output
# channel of each unit, by hand:
#   transformer (width 16, 2 heads, feed-forward 32, 2 layers): embed Linear(1, 16) 32, class token 16,
#     position (1, 17, 16) 272; per layer norm1 32, attention in_proj 3 x 16 x 16 + 48 = 816, out_proj
#     272, norm2 32, linear1 544, linear2 528; final norm 32, head Linear(16, 4) 68: 4,868. A channel
#     of the attention is one feature of q, k and v: 3 x (16 + 1) = 51 (its input norm1 stays whole).
#   GRU (hidden 16, 2 layers): layer 0 3 gates x 16 x (1 + 16 + 2) = 912, a hidden unit 57; layer 1
#     3 x 16 x (16 + 16 + 2) = 1,632, a unit 102; head 68 (17 a class): 2,612.
#   LSTM (hidden 16, bidirectional): 2 directions x 4 gates x 16 x (1 + 16 + 2) = 2,432, a hidden unit
#     of both directions 152; head Linear(32, 4) 132 (33 a class): 2,564.
#   CNN (4 channels): conv 4 x 9 + BatchNorm 8 = 44 (11 a filter); conv 8 x 4 x 9 + 16 = 304 (38);
#     Linear(8, 4) 36 (9): 384.
#   ResNet-18, 10 classes: 11,689,512 for 1,000 classes less 512 x 990 + 990 = 11,181,642; a filter of
#     layer4.0.conv1 with its BatchNorm 256 x 9 + 2 = 2,306, of the other layer4 convolutions 4,610.
MODELS = {
    "transformer": ("examples.models:transformer", {"width": 16, "heads": 2, "layers": 2}, SIGNAL, 4, 4868,
                    {"embed": 2, "class_token": 1, "position": 17, f"{L0}.self_attn": 51, f"{L0}.self_attn.out_proj": 17,
                     f"{L0}.linear1": 17, f"{L0}.linear2": 33, f"{L1}.self_attn": 51, f"{L1}.self_attn.out_proj": 17,
                     f"{L1}.linear1": 17, f"{L1}.linear2": 33, "head": 17}),
    "gru": ("examples.models:gru", {"hidden": 16, "layers": 2}, SIGNAL, 4, 2612, {"rnn.l0": 57, "rnn.l1": 102, "head": 17}),
    "lstm": ("examples.models:lstm", {"hidden": 16, "layers": 1, "bidirectional": True}, SIGNAL, 4, 2564,
             {"rnn.l0": 152, "head": 33}),
    "cnn": ("examples.models:dropout_cnn", {"channels": 4}, IMAGE, 4, 384, {"0": 11, "4": 38, "10": 9}),
    "resnet18": ("torchvision.models:resnet18", {}, RESNET, 10, 11_181_642,
                 {"layer4.0.conv1": 2306, "layer4.0.conv2": 4610, "layer4.1.conv1": 4610, "layer4.1.conv2": 4610}),
}


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # examples.models imports from the repository root, as in a run


def build(key, seed=0, **change):
    name, kwargs, shape, classes = MODELS[key][:4]
    return build_model(name, shape, classes, seed, {**kwargs, **change})


def test_units_follow_the_data_through_attention_recurrence_and_own_parameters():
    model = build("transformer")
    units = parameter_units(model, example_batch(model, SIGNAL))
    layer = lambda b: [[f"{b}.norm1", f"{b}.self_attn"], [f"{b}.self_attn.out_proj"], [f"{b}.norm2", f"{b}.linear1"],
                       [f"{b}.linear2"]]
    # out_proj is called functionally by the attention; the pre-norm LayerNorms join the layer they feed
    assert units == [["embed"], ["class_token"], ["position"], *layer(L0), *layer(L1), ["encoder.norm", "head"]]
    # torchvision's ViT by import path: its encoder blocks are pre-norm, its class token the root's own
    kw = {"image_size": 16, "patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}
    vit = build_model("torchvision.models:VisionTransformer", (3, 16, 16), 4, 0, kw)
    block = "encoder.layers.encoder_layer_0"
    assert parameter_units(vit, example_batch(vit, (3, 16, 16))) == [
        ["conv_proj"], ["class_token"], ["encoder.pos_embedding"], [f"{block}.ln_1", f"{block}.self_attention"],
        [f"{block}.self_attention.out_proj"], [f"{block}.ln_2", f"{block}.mlp.0"], [f"{block}.mlp.3"],
        ["encoder.ln", "heads.head"]]
    gru = build("gru")
    assert parameter_units(gru, example_batch(gru, SIGNAL)) == [["rnn.l0"], ["rnn.l1"], ["head"]]
    cnn = build("cnn")
    assert parameter_units(cnn, example_batch(cnn, IMAGE)) == [["0", "1"], ["4", "5"], ["10"]]


def _fill(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


@pytest.mark.parametrize("key", list(MODELS))
def test_realised_shares_are_within_one_channel_of_25_and_50_percent(key):
    name, kwargs, shape, classes, total, channel = MODELS[key]
    model = build(key)
    assert count_parameters(model) == total
    run = Run(name, shape, classes, model, SGD(model, Hparams(steps=4, batch_size=4, lr=0.1)),
              Hparams(steps=4, batch_size=4, lr=0.1), parent_seeds(0, 0), model_kwargs=kwargs)
    _fill(run.model, 1234.5)  # a value no initialiser draws: every other value was re-drawn
    for side in ("low", "high"):
        for percent in (25, 50):
            cond = parse_condition(f"reinit-{side}-{percent}")
            child = spawn(copy.deepcopy(run), cond, member_seeds(0, cond, 0, 0))
            redrawn = sum(int((p != 1234.5).sum()) for p in child.model.parameters())
            share = child.info["reinit_percent"]
            assert share == pytest.approx(100 * redrawn / total)
            boundary = [e for e in child.info["reinitialised"] if e in channel][-1]
            assert abs(redrawn - percent * total / 100) <= channel[boundary], (key, side, percent, boundary)


PROJECTED = """
import torch
def make(in_shape, num_classes):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(in_shape[0], 16, batch_first=True, proj_size=8)
            self.head = torch.nn.Linear(8, num_classes)
        def forward(self, x):
            return self.head(self.rnn(x.transpose(1, 2))[0][:, -1])
    return Net()
"""


def test_a_module_that_cannot_be_split_is_refused_with_the_share_it_would_give(tmp_path, monkeypatch):
    """An LSTM with a projection mixes its hidden units: it is re-drawn whole or not at all, and no
    share near 25 % exists."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "projected", raising=False)
    (tmp_path / "projected.py").write_text(PROJECTED)
    config = validate({"experiment": "x", "data": {"name": "synthetic", "like": "mnist1d", "shape": [1, 16]},
                       "model": {"name": "projected:make"}, "training": {"steps": 8, "batch_size": 16, "lr": 0.1},
                       "ensemble": {"parents": 1, "children": 2}, "reinit": {"steps": [4], "percents": [25]}}, SCHEMA)
    with pytest.raises(ConfigError) as error:
        check_model(config, log=lambda line: None)
    # weight_ih 4 gates x 16 x 1, weight_hh 64 x 8, biases 2 x 64, the projection 8 x 16: 832; the head
    # Linear(8, 10) 90: 0 % or 90.2 % (at least one channel is re-drawn)
    assert str(error.value) == ("model.name: re-initialisation cannot split 'rnn.l0' (832 of 922 parameters): "
                                "reinit-low-25 would re-draw 90.2 % of the parameters; its channels are not a block "
                                "of rows of every tensor (give the model reinit_units(), or ask for other "
                                "reinit.percents)")


def test_snakemake_refuses_a_share_it_cannot_realise_before_any_job(tmp_path):
    folder = workflow(tmp_path, {**CONFIG, "model": {"name": "projected:make"},
                                 "data": {"name": "synthetic", "like": "mnist1d", "shape": [1, 16]}})
    (folder / "projected.py").write_text(PROJECTED)
    done = snakemake(folder, "configs/own.yaml")
    assert done.returncode != 0 and not (folder / "results").exists()
    assert "Error in config: model.name: re-initialisation cannot split 'rnn.l0' (832 of 922 parameters): " \
           "reinit-low-25 would re-draw 90.2 % of the parameters" in done.stderr


def test_library_constructor_takes_num_classes_and_a_wrong_input_is_refused_in_one_line():
    model = build("resnet18")
    assert type(model).__name__ == "ResNet" and model.fc.out_features == 10
    config = validate({"experiment": "x", "data": {"name": "synthetic", "like": "digits"},
                       "model": {"name": "torchvision.models:resnet18"}, "conditions": ["no-coupling"],
                       "training": {"steps": 8, "batch_size": 16, "lr": 0.1},
                       "ensemble": {"parents": 1, "children": 2}}, SCHEMA)
    with pytest.raises(ConfigError) as error:
        check_model(config, log=lambda line: None)
    message = str(error.value)
    assert message.startswith("model.name: torchvision.models:resnet18(num_classes=10) fails on a batch of 4 inputs "
                              "of shape (1, 8, 8): RuntimeError: ") and "3 channels" in message and "\n" not in message


def test_auto_trains_a_model_vmap_cannot_batch_one_member_a_job_and_says_so():
    base = {"experiment": "x", "data": {"name": "synthetic", "like": "mnist1d", "shape": [1, 16]},
            "model": {"name": "examples.models:gru", "kwargs": {"hidden": 8}}, "conditions": ["no-coupling"],
            "training": {"steps": 8, "batch_size": 16, "lr": 0.1}, "ensemble": {"parents": 1, "children": 2}}
    said = []
    check_model(validate(base, SCHEMA), log=said.append)
    assert said == ["job_shape: auto trains Recurrent one member per job: torch.func.vmap cannot batch its members "
                    "(RuntimeError: Batching rule not implemented for aten::gru.input. We could not generate a "
                    "fallback.)"]
    with pytest.raises(ConfigError, match="^job_shape: condition trains members as one network under torch.func.vmap, "
                                          "and the model fails there .*aten::gru.input"):
        check_model(validate({**base, "job_shape": "condition"}, SCHEMA))


# --- training: dropout from the seeded streams, resumption, members as one network ---------------------

def data_for(shape, classes, n=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)
    return DeviceData(x, y, x[:32], y[:32], classes, crop_pad=0, flip=False)


def fresh(key, seeds, steps=6, dtype=torch.float32, **change):
    name, kwargs, shape, classes = MODELS[key][:4]
    h = Hparams(steps=steps, batch_size=4 if key == "resnet18" else 8, lr=0.05)
    run = Run.fresh(name, shape, classes, h, seeds, model_kwargs={**kwargs, **change})
    if dtype != torch.float32:
        run.model.to(dtype)
        run.optimizer = SGD(run.model, h)
    return run


def same(a: Run, b: Run) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"]) and all(
        torch.equal(p, q) for p, q in zip(a.optimizer.buffers, b.optimizer.buffers))


DROPOUT = [("transformer", {"dropout": 0.2}), ("gru", {"dropout": 0.3}), ("lstm", {}), ("cnn", {}), ("resnet18", {})]


@pytest.mark.parametrize("key,change", DROPOUT)
def test_two_runs_are_identical_and_a_resumed_run_equals_the_uninterrupted_one(key, change):
    shape, classes = MODELS[key][2:4]
    steps = 2 if key == "resnet18" else 6
    data, seeds = data_for(shape, classes, n=8 if key == "resnet18" else 64), parent_seeds(0, 0)
    a, b = fresh(key, seeds, steps, **change), fresh(key, seeds, steps, **change)
    train([a], data)
    torch.manual_seed(999)  # whatever the process drew before, the masks are the stream's
    torch.rand(7)
    before = torch.get_rng_state()
    train([b], data)
    assert same(a, b) and torch.equal(torch.get_rng_state(), before)  # and the caller's draws are left alone
    c = fresh(key, seeds, steps, **change)
    train([c], data, steps // 2)
    resumed = Run.from_state(copy.deepcopy(c.state_dict()), c.hparams)
    torch.manual_seed(5)
    train([resumed], data)
    assert resumed.step == steps and same(a, resumed)


@pytest.mark.parametrize("key,change", [("transformer", {"dropout": 0.2}), ("cnn", {})])
def test_dropout_masks_are_the_members_own(key, change):
    """Two members that differ only in their aug stream draw other masks: their runs differ (with the
    dropout off they are the same run, the augmentation being off)."""
    shape, classes = MODELS[key][2:4]
    data, seeds = data_for(shape, classes), parent_seeds(0, 0)
    other = {**seeds, "aug": seeds["aug"] + 1}
    runs = [fresh(key, s, **change) for s in (seeds, other)]
    for r in runs:
        train([r], data)
    assert not same(*runs)
    off = {"dropout": 0.0} if key == "transformer" else {"p": 0.0}
    runs = [fresh(key, s, **off) for s in (seeds, other)]
    for r in runs:
        train([r], data)
    assert same(*runs)


@pytest.mark.parametrize("key,change", [("transformer", {}), ("cnn", {"p": 0.0})])
def test_members_as_one_network_equal_members_alone_without_dropout_in_float64(key, change):
    shape, classes = MODELS[key][2:4]
    data = data_for(shape, classes, dtype=torch.float64)
    runs = [fresh(key, member_seeds(0, parse_condition("no-coupling"), 0, c), dtype=torch.float64, **change)
            for c in range(2)]
    solo = copy.deepcopy(runs)
    for r in solo:
        train([r], data)
    train(runs, data)
    for s, f in zip(solo, runs):
        a, b = s.model.state_dict(), f.model.state_dict()
        for k in a:
            scale = max(1.0, a[k].double().abs().max().item())
            assert (a[k].double() - b[k].double()).abs().max().item() <= 1e-12 * scale, (key, k)


def test_members_as_one_network_with_dropout_are_deterministic_and_each_draws_its_own_masks():
    data = data_for(SIGNAL, 4)
    seeds = [member_seeds(0, parse_condition("no-coupling"), 0, c) for c in range(2)]
    one = [fresh("transformer", s, dropout=0.2) for s in seeds]
    two = copy.deepcopy(one)
    same_init = [fresh("transformer", {**s, "init": seeds[0]["init"]}, dropout=0.2) for s in seeds]
    train(one, data)
    train(two, data)
    train(same_init, data)
    assert all(same(a, b) for a, b in zip(one, two))
    # one initialisation, one order, other aug streams: the members' masks differ
    assert not same(*same_init)


# --- the workflow -------------------------------------------------------------------------------------

CONFIG = {"experiment": "own", "seed": 0, "device": "cpu", "threads": 1,
          "data": {"name": "synthetic", "like": "digits", "n_train": 64, "n_test": 32},
          "model": {"name": "examples.models:dropout_cnn", "kwargs": {"channels": 4}},
          "training": {"steps": 12, "batch_size": 16, "lr": 0.05}, "ensemble": {"parents": 1, "children": 2},
          "spawn_steps": [4], "reinit": {"percents": [25, 50], "steps": [4]}, "job_shape": "condition"}


def snakemake(workdir, config, *extra, **kw):
    return subprocess.run(["snakemake", "--cores", "2", *extra, "--configfile", config], cwd=workdir,
                          capture_output=True, text=True, timeout=600, **kw)


def workflow(folder: Path, config: dict) -> Path:
    copy_workflow(folder)
    shutil.copytree(ROOT / "examples", folder / "examples", ignore=shutil.ignore_patterns("*.npz", "__pycache__"))
    (folder / "configs/own.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_every_condition_through_snakemake_twice_byte_identical_with_the_hand_counted_shares(tmp_path):
    folders = [workflow(tmp_path / name, CONFIG) for name in ("a", "b")]
    for folder in folders:
        done = snakemake(folder, "configs/own.yaml", "--until", "train_members")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    files = sorted(p.relative_to(folders[0]) for p in (folders[0] / "results/own/predictions").rglob("*.parquet"))
    assert len(files) == 2 * (2 + 2 + 2 * 2)  # no-coupling, coupled-order, to-t, to-t-reset, 25 and 50 low and high
    assert all((folders[0] / f).read_bytes() == (folders[1] / f).read_bytes() for f in files)
    # the CNN on 10 classes: 44 + 304 + Linear(8, 10) 90 = 438 parameters; the widest channel 38
    total, channel = 438, max(MODELS["cnn"][5].values())
    shares = {f: float(pq.read_schema(folders[0] / f).metadata[REINIT_PERCENT_KEY.encode()])
              for f in files if "reinit" in str(f)}
    assert len(shares) == 8
    for f, share in shares.items():
        requested = float(f.parts[3].rsplit("-", 1)[1])  # results/own/predictions/reinit-low-25/...
        assert abs(share - requested) * total / 100 <= channel, (f, share)


LONG = {**CONFIG, "experiment": "long", "conditions": ["no-coupling"], "job_shape": "auto",
        "ensemble": {"parents": 1, "children": 1}, "training": {"steps": 1600, "batch_size": 16, "lr": 0.02},
        "checkpoint": {"every_seconds": None}}


def test_a_run_with_dropout_interrupted_and_continued_through_snakemake_equals_the_uninterrupted(tmp_path):
    whole, cut = workflow(tmp_path / "whole", LONG), workflow(tmp_path / "cut", LONG)
    target = ["--until", "train_members"]
    done = snakemake(whole, "configs/own.yaml", *target)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "job_shape: auto trains Sequential one member per job: its members as one network under " \
           "torch.func.vmap were measured no faster" in done.stderr
    run = subprocess.Popen(["snakemake", "--cores", "1", "--configfile", "configs/own.yaml", *target], cwd=cut,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log, deadline = cut / "logs/long/children/no-coupling/t0/p0/c0.log", time.monotonic() + 120
    while "step 200/" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=60) != 0
    assert "Interrupted: stopped by SIGINT at step" in log.read_text()
    again = snakemake(cut, "configs/own.yaml", *target)
    assert again.returncode == 0, again.stderr[-3000:]
    files = sorted(p.relative_to(whole) for p in (whole / "results/long/predictions").rglob("*.parquet"))
    assert files and all((whole / f).read_bytes() == (cut / f).read_bytes() for f in files)


# --- every module type of torch.nn that owns parameters ------------------------------------------------

class Zoo(torch.nn.Module):
    """One of each splittable layer, in the order data flows through them (registered in reverse, so
    the order must come from the trace): a (1, 16) signal through embeddings, 1-, 2- and 3-D and
    transposed convolutions with GroupNorm and InstanceNorm, a PReLU, a GRU cell, a bilinear layer."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = torch.nn.Bilinear(6, 6, num_classes)
        self.cell = torch.nn.GRUCell(8, 6)
        self.act = torch.nn.PReLU(8)
        self.up = torch.nn.ConvTranspose1d(4, 8, 3, stride=2)
        self.vol = torch.nn.Conv3d(2, 4, 3, padding=1)
        self.inorm = torch.nn.InstanceNorm2d(2, affine=True)
        self.plane = torch.nn.Conv2d(4, 2, 3, padding=1, groups=2)
        self.gnorm = torch.nn.GroupNorm(2, 4)
        self.line = torch.nn.Conv1d(5, 4, 3, padding=1)
        self.embed = torch.nn.Embedding(7, 5)

    def forward(self, x):
        tokens = (x[:, 0].abs() * 3).long().clamp(max=6)             # (B, 16) ids
        h = self.gnorm(self.line(self.embed(tokens).transpose(1, 2)))  # (B, 4, 16)
        h = self.inorm(self.plane(h.view(len(x), 4, 4, 4)))            # (B, 2, 4, 4)
        h = self.vol(h.unsqueeze(2).expand(-1, -1, 2, -1, -1))         # (B, 4, 2, 4, 4)
        h = self.act(self.up(h.mean((2, 3))))                          # (B, 8, 9)
        state = self.cell(h.mean(2))
        return self.head(state, state)


def test_every_layer_type_splits_into_whole_output_channels_within_one_channel_of_the_request():
    from coupledsgd.engine.spawn import redraw, share_plan

    model = Zoo(SIGNAL, 3)
    x = example_batch(model, SIGNAL)
    units = parameter_units(model, x)
    assert units == [["embed"], ["line", "gnorm"], ["plane", "inorm"], ["vol"], ["up"], ["act"], ["cell"], ["head"]]
    total = count_parameters(model)
    parent, fresh = _fill(copy.deepcopy(model), 1234.5), _fill(copy.deepcopy(model), -1.0)
    # output channels by hand: an embedding feature 7 ids; a Conv1d filter 5 x 3 + 1 with GroupNorm's 2;
    # a grouped Conv2d filter 2 x 9 + 1 with InstanceNorm's 2; a Conv3d filter 2 x 27 + 1; a transposed
    # filter 4 x 3 + 1; a PReLU slope 1; a GRU cell's hidden unit 3 gates x (8 + 6 + 2); a bilinear
    # output 6 x 6 + 1
    channel = {"embed": 7, "line": 18, "plane": 21, "vol": 55, "up": 13, "act": 1, "cell": 48, "head": 37}
    checked = set()
    for side in ("low", "high"):
        # low: 2 % ends in the embedding, 15 % in the grouped convolution, 54.2 % in the PReLU
        for percent in (2, 10, 15, 25, 50, 54.2, 75):
            plan = share_plan(parent, side, percent, x)
            assert [s[0] for s in plan.splits] == [5, 4, 2, 4, 8, 8, 6, 3]
            child = copy.deepcopy(parent)
            rec = redraw(child, fresh, side, percent, x)
            redrawn = sum(int((p == -1.0).sum()) for p in child.parameters())
            assert rec.percent == pytest.approx(100 * redrawn / total)
            boundary = plan.units[plan.steps[-1][0]][0]
            assert abs(redrawn - percent * total / 100) <= channel[boundary], (side, percent, boundary)
            for entry, (a, b) in rec.channels.items():  # the unit taken in part: whole channels a..b-1
                for name, t in plan.tensors[entry].items():
                    if name in plan.splits[plan.steps[-1][0]][1]:
                        dim, rows = plan.splits[plan.steps[-1][0]][1][name]
                        got = dict(child.named_parameters()).get(name)
                        if got is None:
                            continue
                        mask = (got == -1.0).movedim(dim, 0).reshape(got.shape[dim], -1)
                        expect = torch.zeros(got.shape[dim], dtype=torch.bool)
                        expect[rows(a, b)] = True
                        assert torch.equal(mask.all(1), expect) and torch.equal(mask.any(1), expect), name
                        checked.add(name)
    assert len(checked) == 20, checked  # every tensor of every layer taken in part at least once


def test_the_call_convention_is_read_from_the_signature():
    from coupledsgd.engine.models import takes_shape

    def workflow_style(in_shape, num_classes, width=8): ...
    def two_positional(shape, classes): ...
    def library_style(*, weights=None, **kwargs): ...
    def classes_first(num_classes=10, width=8): ...
    assert takes_shape(workflow_style) and takes_shape(two_positional)
    assert not takes_shape(library_style) and not takes_shape(classes_first)
    with pytest.raises(ConfigError, match=r"^model.kwargs: num_classes is the data's \(10\); leave it out$"):
        build_model("torchvision.models:resnet18", RESNET, 10, 0, {"num_classes": 5})


STATED = """
import torch
class Net(torch.nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.embed = torch.nn.Linear(in_shape[0], 4)
        self.position = torch.nn.Parameter(torch.randn(1, in_shape[1], 4))
        self.head = torch.nn.Linear(4, num_classes)
    def forward(self, x):
        return self.head((self.embed(x.transpose(1, 2)) + self.position).mean(1))
    def reinit_units(self):
        return [["embed"], ["position"], ["head"]]  # the root's own parameter by its name
class Tied(Net):
    reinit_units = None
    def __init__(self, in_shape, num_classes):
        super().__init__(in_shape, num_classes)
        self.back = torch.nn.Linear(4, num_classes)
        self.back.weight = self.head.weight  # one parameter, two layers
"""


def test_stated_units_name_the_roots_own_parameters_and_tied_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "stated", raising=False)
    (tmp_path / "stated.py").write_text(STATED)
    model = build_model("stated:Net", SIGNAL, 3, 0)
    assert parameter_units(model) == [["embed"], ["position"], ["head"]]
    from coupledsgd.engine.spawn import share_plan

    assert share_plan(model, "low", 50, example_batch(model, SIGNAL)).sizes == [8, 64, 15]
    tied = build_model("stated:Tied", SIGNAL, 3, 0)
    with pytest.raises(ConfigError, match="'back.weight' is also a parameter of 'head' \\(tied weights\\)"):
        parameter_units(tied, example_batch(tied, SIGNAL))
