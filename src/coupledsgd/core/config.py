"""The experiment config: schema validation with defaults, the checks a schema cannot express, and
the grid of runs it describes.

Every error is a `ConfigError` whose message starts with the dotted key at fault.
"""

from __future__ import annotations

import copy
import functools
import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .coerce import MAX_VALUES, coerce, expanded_size, non_finite, not_json, read_command_line
from .conditions import REINIT_FAMILIES, expand, parse_condition
from .errors import ConfigError
from .registry import ARRAYS, DATASETS, MODELS, SYNTHETIC, dataset, is_custom_model

if TYPE_CHECKING:  # jsonschema loads only when a config is checked
    from jsonschema import ValidationError

SchemaPath = str | Path | Traversable | None

# The schema every config is checked against; the one place the defaults are written. Package data,
# so an installed package (wheel, non-editable, zipped) carries it; nothing reads it at import.
SCHEMA = files(__package__) / "config.schema.yaml"


@functools.cache
def _package_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def load_schema(schema: SchemaPath = None) -> dict:
    """The parsed schema: the package's (None), or the file at `schema` (a path or a resource)."""
    if schema is None:
        return copy.deepcopy(_package_schema())
    return yaml.safe_load((Path(schema) if isinstance(schema, str) else schema).read_text())


def _fill_defaults(node: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if isinstance(node.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(node[key], sub)


def defaults(schema: SchemaPath = None) -> dict:
    """The schema's defaults as a nested dict, a section for every object (the required ones too)."""
    loaded = load_schema(schema)
    node: dict = {key: {} for key, sub in loaded["properties"].items() if sub.get("type") == "object"}
    _fill_defaults(node, loaded)
    return node


def _key(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join(filter(None, [path, extra[0] if extra else ""]))
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return ".".join(filter(None, [path, missing[0] if missing else ""]))
    return path or "(top level)"


def _message(error: ValidationError) -> str:
    if error.validator == "anyOf":  # model.name: a registry name or an import path
        forms = [
            f"one of {', '.join(map(str, sub['enum']))}" if "enum" in sub else f"of the form {sub['pattern']}"
            for sub in error.validator_value
        ]
        return f"{error.instance!r} is neither {' nor '.join(forms)}"
    return error.message


def validate(config: dict, schema: SchemaPath = None, command_line: dict | None = None) -> dict:
    """A validated copy of `config` with the schema's defaults filled in (schema: `load_schema`'s);
    `command_line`: the values given with `--config`, already laid over `config` (`conform`)."""
    config = conform(config, schema, command_line)
    _check(config)
    return _sorted(config)


def conform(config: dict, schema: SchemaPath = None, command_line: dict | None = None) -> dict:
    """A copy of `config` with the schema's defaults filled in and its strings coerced to the schema's
    types (`coerce`; those `command_line` put in open objects read as a file reads them), checked
    against the schema, for finite numbers and for a usable experiment name: every check that holds
    on any machine (not the data, the cores or the device)."""
    import jsonschema

    loaded = load_schema(schema)
    config = copy.deepcopy(dict(config))
    if command_line:
        config = read_command_line(config, command_line, loaded)
    config = coerce(config, loaded)
    _fill_defaults(config, loaded)
    for key in sorted(config):
        # First: the schema's messages quote the values they refuse, and every setting goes into the
        # jobs' params and the config hash as text; YAML aliases can make that text gigabytes long.
        if expanded_size(config[key]) > MAX_VALUES:
            raise ConfigError(
                f"{key}: holds {expanded_size(config[key]):,} values once its YAML aliases are "
                f"expanded; a config holds at most {MAX_VALUES:,}"
            )
    # Before the schema, whose bounds would call NaN out of range; each container once (aliases).
    found = non_finite(config)
    if found:
        raise ConfigError(f"{found[0]}: {found[1]} is not a finite number")
    errors = sorted(jsonschema.Draft7Validator(loaded).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"{_key(e)}: {_message(e)}")
    unread = not_json(config)
    if unread:
        raise ConfigError(
            f"{unread[0]}: {unread[1]!s} is a {type(unread[1]).__name__} to YAML, not a number, "
            "string or boolean; quote it to make it a string"
        )
    if config["experiment"] in (".", ".."):
        raise ConfigError(
            f"experiment: {config['experiment']!r} is not a folder of its own under results/; choose a name"
        )
    return config


def _sorted(node: Any) -> Any:
    # Snakemake compares params as ordered dicts: reordering keys in a YAML file must not rerun jobs.
    return {k: _sorted(node[k]) for k in sorted(node)} if isinstance(node, dict) else node


def _check(config: dict) -> None:
    """The constraints between keys that JSON schema cannot state."""
    t = config["training"]
    reinit = any(name in REINIT_FAMILIES for name in config["conditions"])
    # Settings of conditions the experiment does not run are not checked against it.
    for key in ("spawn_steps", "reinit.steps") if reinit else ("spawn_steps",):
        steps = config["spawn_steps"] if key == "spawn_steps" else config["reinit"]["steps"]
        if len(set(steps)) != len(steps):
            raise ConfigError(f"{key}: duplicate spawn steps {sorted(steps)}")
        late = [s for s in steps if s >= t["steps"]]
        if late:
            raise ConfigError(
                f"{key}: spawn step {late[0]} is not before the end of training (training.steps = {t['steps']})"
            )
    chosen = config["barrier"]["spawn_steps"]
    if isinstance(chosen, list):
        extra = [s for s in chosen if s not in config["spawn_steps"]]
        if extra:
            raise ConfigError(f"barrier.spawn_steps: {extra[0]} is not one of spawn_steps {config['spawn_steps']}")
    for key in ("milestones",):
        late = [m for m in t[key] if m >= t["steps"]]
        if late:
            raise ConfigError(f"training.{key}: {late[0]} is not before training.steps = {t['steps']}")
    if t["warmup_steps"] >= t["steps"]:
        raise ConfigError(f"training.warmup_steps: {t['warmup_steps']} is not below training.steps")
    if reinit and len(set(config["reinit"]["percents"])) != len(config["reinit"]["percents"]):
        raise ConfigError(f"reinit.percents: duplicate percents {config['reinit']['percents']}")
    cores = os.cpu_count() or 1
    if config["threads"] > cores:
        raise ConfigError(f"threads: {config['threads']} exceeds the {cores} cores of this machine")
    if config["data"]["name"] in ("cifar10", "tinyimagenet") and not config["data"].get("root"):
        raise ConfigError(f"data.root: dataset {config['data']['name']!r} needs the folder that holds it")
    _check_data_and_model(config)

    for name in expand(config["conditions"], config["reinit"]["percents"]):
        parse_condition(name)
    if config["cuda"].get("graphs") and config["cuda"].get("compile"):
        raise ConfigError("cuda.graphs: captures the step itself; use it without cuda.compile")


def _check_synthetic(data: dict) -> None:
    """The keys only synthetic data takes, and a shape of the rank of the data it is like."""
    given = [k for k in ("like", "shape", "classes", "n_test") if data.get(k) is not None]
    if data["name"] != SYNTHETIC:
        if given:
            raise ConfigError(f"data.{given[0]}: only data.name: {SYNTHETIC} takes it")
        return
    like = DATASETS[data.get("like") or "cifar10"]
    if data.get("shape") is not None and len(data["shape"]) != len(like.shape):
        raise ConfigError(
            f"data.shape: {data['shape']} is not of the rank of {data.get('like') or 'cifar10'}'s "
            f"{list(like.shape)} (channels first)"
        )


def _check_data_and_model(config: dict) -> None:
    data, model, batch = config["data"], config["model"]["name"], config["training"]["batch_size"]
    _check_arrays_keys(data)
    _check_synthetic(data)
    facts = dataset(data)
    if "kwargs" in config["model"] and not is_custom_model(model):
        raise ConfigError(
            f"model.kwargs: model {model!r} takes no arguments; only a model given as 'package.module:callable' does"
        )
    kind = facts.kind
    if not is_custom_model(model) and MODELS[model].takes != kind:
        takes = MODELS[model].takes
        fitting = ", ".join(name for name, m in MODELS.items() if m.takes == kind) or "none built in"
        raise ConfigError(
            f"model.name: {model!r} takes {takes} inputs, but dataset {data['name']!r} holds "
            f"{kind}s; models for it: {fitting}"
        )
    wants = None if is_custom_model(model) else MODELS[model].channels
    if wants is not None and facts.shape[0] != wants:
        raise ConfigError(
            f"model.name: {model!r} takes {wants}-channel inputs, but dataset {data['name']!r} "
            f"has {facts.shape[0]} channel(s)"
        )
    n, available = data.get("n_train"), facts.n_train
    if n is not None and n > available:
        raise ConfigError(f"data.n_train: {n} exceeds the {available:,} training examples of {data['name']!r}")
    if n is not None and n < batch:
        raise ConfigError(f"data.n_train: {n} examples cannot fill one batch of {batch}")
    if n is None and available < batch:
        raise ConfigError(
            f"training.batch_size: {batch} is more than the {available:,} training examples of {data['name']!r}"
        )
    if data.get("crop_pad") or data.get("flip"):
        key = "data.crop_pad" if data.get("crop_pad") else "data.flip"
        if kind != "image":
            raise ConfigError(
                f"{key}: random crops and flips are for images (channels, height, width); the inputs are {facts.shape}"
            )


def _check_arrays_keys(data: dict) -> None:
    """data.path, crop_pad and flip belong to arrays datasets; the registered ones fix their own."""
    if data["name"] == ARRAYS:
        if not data.get("path"):
            raise ConfigError(
                "data.path: dataset 'arrays' needs the .npz file that holds x_train, y_train, x_test, y_test"
            )
        return
    for key in ("path", "crop_pad", "flip"):
        if data.get(key) is not None:
            raise ConfigError(
                f"data.{key}: only for data.name 'arrays'; dataset {data['name']!r} fixes its own "
                "files and augmentation"
            )


def needs_model_check(config: dict) -> bool:
    """Whether the model must be built and run once before any job (`engine.check.check_model`): a
    model of the user's own, or any model on arrays data."""
    return is_custom_model(config["model"]["name"]) or config["data"]["name"] == ARRAYS


def job_shape(config: dict) -> str:
    """What one training job trains (`job_shape`, with `auto` resolved for the device and model)."""
    shape = config["job_shape"]
    if shape != "auto":
        return shape
    # Measured (bench/RESULTS.md): grouped cnn1d and CIFAR ResNets are faster per member on either
    # device; on a GPU ResNet-50's grouped convolutions are slower than one member alone; the ViT's
    # members as one network (members.StackedViT) have no GPU measurement yet, so it stays one member
    # a job; on the CPU the ResNets' gain does not reproduce. A model given by import path has no
    # grouped version; stacked under vmap its members trained 0.6-1.5x as fast as one after another
    # on the CPU, by size and by run (0.84x for a CNN with Dropout2d, 1.22x for a small pre-norm
    # transformer; bench/RESULTS.md), a spread within this machine's noise: one member a job, whose
    # dropout masks are then its solo masks bit for bit. A model vmap cannot batch (GRU, LSTM) could
    # not run otherwise; the config check logs which applies (`engine.check`).
    model = config["model"]["name"]
    if model == "cnn1d" or (config["device"] == "cuda" and model in ("resnet8", "resnet20")):
        return "condition"
    return "member"


def config_hash(config: dict) -> str:
    """Hash of the settings every result of an experiment depends on (seed, data, model, training).

    The grid (spawn steps, conditions, parents, children) is left out: growing the grid must not
    make finished results look foreign.
    """
    import hashlib
    import json

    data = {k: v for k, v in config["data"].items() if k not in ("root", "download")}
    keyed = {"seed": config["seed"], "data": data, "model": config["model"], "training": config["training"]}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
