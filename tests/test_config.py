from pathlib import Path

import pytest
import yaml

from coupledsgd.core.grid import members, parent_states
from coupledsgd.core.config import SCHEMA, validate
from coupledsgd.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def default():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def with_change(path, value):
    config = default()
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    return config


def test_the_default_config_describes_the_measured_grid():
    config = validate(default(), SCHEMA)
    assert config["training"]["steps"] == 600 and config["ensemble"] == {"parents": 4, "children": 3}
    grid = members(config)
    # 2 unspawned + 2 x 5 spawn steps + 6 re-initialisations at one step, x 4 parents x 3 children
    assert len(grid) == (2 + 2 * 5 + 6) * 4 * 3
    assert len({m.key for m in grid}) == len(grid)
    assert parent_states(config) == [(p, t) for p in range(4) for t in (0, 6, 30, 60, 180)]


def test_defaults_are_filled_in():
    config = validate({"experiment": "x", "data": {"name": "digits"}, "model": {"name": "resnet8"},
                       "training": {"steps": 100, "batch_size": 4, "lr": 0.1},
                       "ensemble": {"parents": 1, "children": 2}}, SCHEMA)
    assert config["training"]["momentum"] == 0.9 and config["reinit"]["percents"] == [10, 25, 50]
    assert config["metrics"]["bootstrap"] == 1000 and config["barrier"]["points"] == 11


@pytest.mark.parametrize("path, value, key", [
    ("learning_rate", 0.1, "learning_rate"),
    ("training.lr", "fast", "training.lr"),
    ("training.lr", 0, "training.lr"),
    ("training.steps", 0, "training.steps"),
    ("training.batch_size", -64, "training.batch_size"),
    ("training.momentum", 1.0, "training.momentum"),
    ("training.schedule", "linear", "training.schedule"),
    ("training.milestones", [700], "training.milestones"),
    ("training.warmup_steps", 600, "training.warmup_steps"),
    ("ensemble.children", 0, "ensemble.children"),
    ("ensemble.k", 4, "ensemble.k"),
    ("spawn_steps", [0, 600], "spawn_steps"),
    ("spawn_steps", [0, 6, 6], "spawn_steps"),
    ("spawn_steps", [-1], "spawn_steps"),
    ("data.name", "mnist", "data.name"),
    ("data.n_train", 10, "data.n_train"),
    ("data", {"name": "cifar10"}, "data.root"),
    ("model.name", "resnet21", "model.name"),
    ("conditions", ["coupled-to-t", "coupled"], "conditions"),
    ("reinit.percents", [0], "reinit.percents"),
    ("reinit.percents", [101], "reinit.percents"),
    ("reinit.steps", [600], "reinit.steps"),
    ("threads", 64, "threads"),
    ("device", "tpu", "device"),
    ("experiment", "a/b", "experiment"),
    ("experiment", ".", "experiment"),          # would write into results/ itself
    ("experiment", "..", "experiment"),         # ... or into the repository
    ("experiment", "x" * 65, "experiment"),
    ("model.name", "resnet20", "model.name"),   # an image model on MNIST-1D's signals
    ("data", {"name": "digits"}, "model.name"),  # the signal model on images
    ("training.batch_size", 5000, "data.n_train"),
    ("cuda", {"graphs": True, "compile": True}, "cuda.graphs"),
])
def test_bad_values_stop_with_a_message_naming_the_key(path, value, key):
    with pytest.raises(ConfigError) as error:
        validate(with_change(path, value), SCHEMA)
    assert str(error.value).startswith(key), str(error.value)


def test_a_missing_section_is_named():
    config = default()
    del config["training"]
    with pytest.raises(ConfigError, match="^training"):
        validate(config, SCHEMA)


def test_a_batch_larger_than_the_whole_dataset_is_named_before_any_job():
    config = with_change("data", {"name": "mnist1d", "n_train": None})
    config["training"]["batch_size"] = 5000
    with pytest.raises(ConfigError, match="^training.batch_size: 5000 is more than the 4,000 training examples"):
        validate(config, SCHEMA)


def test_the_vit_on_one_channel_images_is_refused_before_any_job():
    # torchvision's ViT projects 3-channel patches; digits has one channel
    config = {**default(), "data": {"name": "digits"}, "model": {"name": "vit"}}
    config["training"] = {**config["training"], "batch_size": 32}
    with pytest.raises(ConfigError, match="^model.name: 'vit' takes 3-channel inputs, but dataset 'digits' has 1 channel"):
        validate(config, SCHEMA)


def test_reinit_settings_are_not_checked_when_no_reinit_condition_runs():
    config = with_change("conditions", ["no-coupling", "coupled-to-t"])
    config["training"]["steps"] = 24
    config["spawn_steps"] = [0, 8]
    del config["reinit"]   # its default steps, [30], lie past training.steps = 24
    assert validate(config, SCHEMA)["training"]["steps"] == 24
    config["conditions"].append("reinit-low")
    with pytest.raises(ConfigError, match="^reinit.steps: spawn step 30 is not before the end of training"):
        validate(config, SCHEMA)


@pytest.mark.parametrize("device, model, shape", [
    ("cpu", "cnn1d", "condition"), ("cpu", "resnet20", "member"), ("cpu", "vit", "member"),
    ("cuda", "cnn1d", "condition"), ("cuda", "resnet20", "condition"), ("cuda", "resnet8", "condition"),
    ("cuda", "resnet50", "member"), ("cuda", "vit", "member"),
])
def test_auto_job_shape_follows_the_measurements(device, model, shape):
    from coupledsgd.core.config import job_shape

    assert job_shape({"job_shape": "auto", "device": device, "model": {"name": model}}) == shape


def test_several_vits_a_job_in_bf16_on_cuda_are_accepted():
    # the stacked ViT (members.StackedViT) runs without vmap, whose bf16 attention failed on CUDA
    config = yaml.safe_load((ROOT / "configs/tinyimagenet-vit.yaml").read_text())
    config["job_shape"] = "children"
    assert validate(config, SCHEMA)["job_shape"] == "children"


def test_command_line_strings_take_the_schema_types():
    # Snakemake hands `--config 'training={lr: 0.05, ...}'` over as strings (YAML's BaseLoader).
    typed = with_change("training", {**default()["training"], "lr": 0.05, "warmup_steps": 10, "nesterov": False})
    typed.update(seed=3, spawn_steps=[0, 6, 30, 60, 180], checkpoint={"every_seconds": None})
    strings = with_change("training", {**{k: str(v) for k, v in default()["training"].items()},
                                       "lr": "0.05", "warmup_steps": "10", "nesterov": "false"})
    strings.update(seed="3", spawn_steps=["0", "6", "30", "60", "180"], checkpoint={"every_seconds": "null"})
    from coupledsgd.core.config import config_hash

    assert validate(strings) == validate(typed)
    assert config_hash(validate(strings)) == config_hash(validate(typed))
    assert validate(with_change("training.lr", "1e-3"))["training"]["lr"] == 0.001
    assert validate(with_change("experiment", 2024))["experiment"] == "2024"


def test_a_string_that_spells_no_number_is_quoted_as_typed():
    with pytest.raises(ConfigError, match=r"^training\.lr: 'fast' is not of type 'number'$"):
        validate(with_change("training.lr", "fast"))
    with pytest.raises(ConfigError, match=r"^ensemble\.parents: '2\.5' is not of type 'integer'$"):
        validate(with_change("ensemble.parents", "2.5"))


@pytest.mark.parametrize("path, value, shown", [
    ("training.lr", float("nan"), "nan"), ("training.lr", ".nan", "nan"), ("training.momentum", float("inf"), "inf"),
    ("training.weight_decay", "-.inf", "-inf"), ("training.gamma", float("nan"), "nan"),
    ("checkpoint.every_seconds", float("inf"), "inf"),
])
def test_numbers_must_be_finite(path, value, shown):
    config = default()
    config.setdefault("checkpoint", {})
    *parents, last = path.split(".")
    config[parents[0]][last] = value
    with pytest.raises(ConfigError, match=rf"^{path}: {shown} is not a finite number$"):
        validate(config)


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """YAML whose `a{levels}` expands to width ** levels numbers through aliases (a few hundred bytes)."""
    lines = ["a0: &a0 [" + ", ".join(["1.0"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["unknown keys", "model.kwargs", "a typed key"])
def test_an_alias_bomb_is_refused_in_under_two_seconds(where):
    """8 levels of 9 aliases: 43 million numbers once expanded. Walking the expansion (coercion, the
    non-finite check, the schema's messages that quote a value) took 24-74 s."""
    import time

    bomb = "\n".join("  " + line for line in alias_bomb().splitlines())
    text = {"unknown keys": alias_bomb(),
            "model.kwargs": f"model:\n  name: mynets:mlp\n  kwargs:\n{bomb}\n",
            "a typed key": f"bombs:\n{bomb}\nspawn_steps: *a8\n"}[where]
    config = {**default(), **yaml.safe_load(text)}
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"values once its YAML aliases are expanded|not allowed"):
        validate(config)
    assert time.perf_counter() - start < 2.0
