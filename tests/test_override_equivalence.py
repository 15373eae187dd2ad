"""Override equivalence: for every key of the schema, open objects (`model.kwargs`) included, a value
given with `--config` and the same value in the config file give the same validated config and the
same config hash, or the same one-line refusal (README, "Settings on the command line").

Generated cases (hypothesis) run Snakemake's own readers (its config-file loader and its `--config`
parser) and the workflow's `validate`, as `snakemake` does; the command-line cases run `snakemake`.
"""

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures import copy_workflow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snakemake.cli import parse_config
from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config
from test_cli_failures import one_line
from test_package import TINY

from coupledsgd.core.coerce import misread, yaml_scalar
from coupledsgd.core.config import ConfigError, config_hash, load_schema, validate

SCHEMA = load_schema()
BASE = {**TINY, "experiment": "eq"}
OWN_MODEL = {"name": "mynets:mlp", "kwargs": {"width": 8}}


def leaves(schema: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """(path, schema) of every key that holds a value: objects with properties are walked, open
    objects (no properties) are leaves."""
    found = []
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            found += leaves(sub, (*path, key))
        else:
            found.append(((*path, key), sub))
    return found


KEYS = leaves(SCHEMA)
# A plain YAML string: what a user types unquoted (YAML reads it back as that string).
PLAIN = st.text("abcxyz_-.0123456789", min_size=1, max_size=8).filter(lambda s: yaml_scalar(s) == s)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), PLAIN)
KWARGS = st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True),
                         st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                                   st.dictionaries(st.sampled_from("abc"), SCALARS, max_size=2)), max_size=4)


def values(schema: dict):
    """Values of the type `schema` asks for (in range or not: both sides must agree either way)."""
    if schema.get("type") == "object":
        return KWARGS
    if "anyOf" in schema:  # model.name
        return st.sampled_from([*schema["anyOf"][0]["enum"], "mynets:mlp"])
    if "oneOf" in schema:  # barrier.spawn_steps: a word or a list
        return st.one_of([values(alternative) for alternative in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    options = []
    for kind in kinds:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            low = schema.get("minimum", -5)
            options.append(st.integers(low - 1, low + 10**5))
        elif kind == "number":
            options.append(st.floats(-1.0, 1000.0, allow_nan=False, width=32) | st.integers(0, 100))
        elif kind == "string":
            options.append(PLAIN)
        elif kind == "array":
            options.append(st.lists(values(schema["items"]), max_size=4))
    return st.one_of(options)


def flow(value) -> str:
    """`value` as a user types it: YAML, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def outcome(config: dict, command_line: dict | None = None):
    try:
        valid = validate(config, command_line=command_line)
    except ConfigError as e:
        return "refused", str(e)
    return valid, config_hash(valid)


def base_for(path: tuple) -> dict:
    base = copy.deepcopy(BASE)
    if path[:1] == ("model",) and path != ("model", "name"):
        base["model"] = copy.deepcopy(OWN_MODEL)
    return base


@pytest.mark.parametrize("path,schema", KEYS, ids=[".".join(p) for p, _ in KEYS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_value_on_the_command_line_is_the_value_in_the_file(tmp_path_factory, path, schema, data):
    value = data.draw(values(schema))
    base = base_for(path)
    in_file = copy.deepcopy(base)
    node = in_file
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    folder = tmp_path_factory.mktemp("eq", numbered=True)
    (folder / "file.yaml").write_text(yaml.safe_dump(in_file))
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    from_file = load_configfile(str(folder / "file.yaml"))

    nested = value
    for key in reversed(path[1:]):
        nested = {key: nested}
    entry = f"{path[0]}={flow(nested)}"
    given_ = parse_config([entry])
    on_command_line = load_configfile(str(folder / "base.yaml"))
    update_config(on_command_line, given_)

    expected = outcome(from_file)
    why = misread([entry], given_, SCHEMA)
    if why:
        # Snakemake drops the quotes of a nested value (a string YAML would read as another type:
        # the dump quotes it) and reads a top-level one as a Python number where it can (`1e3`): the
        # workflow refuses such a value in one line rather than run another experiment.
        assert "'" in entry or '"' in entry or len(path) == 1, (entry, why)
        assert "\n" not in why
        return
    assert outcome(on_command_line, given_) == expected, (entry, value)


# --- through the snakemake command ---------------------------------------------------------------------

MODEL_SOURCE = '''"""A model that checks the types of its arguments, as a model of one's own may."""
from torch import nn


def mlp(in_shape, num_classes, width=16, use_norm=True):
    if not isinstance(width, int) or not isinstance(use_norm, bool):
        raise TypeError(f"width {width!r}, use_norm {use_norm!r}")
    layers = [nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1], width)]
    return nn.Sequential(*layers, *([nn.LayerNorm(width)] if use_norm else []), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''
OWN = {**TINY, "experiment": "own", "model": {"name": "mynets:mlp", "kwargs": {"width": 8, "use_norm": False}}}


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("own"))
    (workdir / "mynets.py").write_text(MODEL_SOURCE)
    (workdir / "configs/own.yaml").write_text(yaml.safe_dump(OWN))
    (workdir / "configs/bare.yaml").write_text(yaml.safe_dump({**OWN, "model": {"name": "mynets:mlp"}}))
    head = "results/own/predictions/coupled-to-t/t4/p0/c0.parquet"
    done = snakemake(workdir, head, "--configfile", "configs/own.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, head


def snakemake(workdir: Path, *args: str):
    return subprocess.run(["snakemake", "--cores", "1", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=600)


def test_model_kwargs_on_the_command_line_run_as_in_the_file(own_model):
    workdir, head = own_model
    again = snakemake(workdir, "-n", head, "--configfile", "configs/bare.yaml", "--config",
                      'model={name: "mynets:mlp", kwargs: {width: 8, use_norm: false}}')
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_kwargs_value_yaml_reads_as_no_setting_is_refused_in_one_line(own_model):
    workdir, head = own_model
    refused = snakemake(workdir, "-n", head, "--configfile", "configs/bare.yaml", "--config",
                        "model={name: \"mynets:mlp\", kwargs: {width: 8, since: 2024-01-01}}")
    assert one_line(refused, "Error in config") == (
        "Error in config: model.kwargs.since: 2024-01-01 is a date to YAML, not a number, string or boolean; "
        "quote it to make it a string")


def test_a_quoted_command_line_value_the_file_would_keep_a_string_is_refused(own_model):
    """Snakemake drops the quotes of a nested `--config` value: "8" would reach the model as 8."""
    workdir, head = own_model
    refused = snakemake(workdir, "-n", head, "--configfile", "configs/bare.yaml", "--config",
                        'model={name: "mynets:mlp", kwargs: {width: "8"}}')
    assert one_line(refused, "Error in config") == (
        "Error in config: model.kwargs.width: '8' in a config file, but 8 from the command line (Snakemake drops "
        "quotes and reads numbers its own way there); set it in the config file")
