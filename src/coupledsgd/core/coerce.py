"""Config values as the schema types them: command-line strings coerced, non-finite numbers found.

Snakemake parses a top-level `--config key=value` as a number where it can, but a nested one
(`--config 'training={lr: 0.05}'`) with YAML's BaseLoader, which leaves every scalar a string. Those
strings are coerced here to the type the schema asks for, where they spell one; a string that does
not stays as typed, so the schema's error quotes what the user wrote. Before that, every command-line
value is read as a YAML file reads it (`read_command_line`): an open object (`model.kwargs`) has no
types to coerce to, and a key of several types (`data.root`: a string or null) would keep `null` a
string. Only those: a string in the file is one the user wrote as a string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import yaml

# The most values a config may hold once its YAML aliases are expanded: far above any real
# experiment's settings (a few hundred), far below an alias bomb's millions.
MAX_VALUES = 100_000
_INTEGER = re.compile(r"[-+]?\d+")
# YAML's spellings of the special floats, beside Python's (nan, inf), which float() reads itself.
_YAML_FLOATS = {".nan": math.nan, ".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NULLS = {"null", "~", "none"}


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def yaml_scalar(text: str) -> Any:
    """`text` as YAML reads it unquoted in a file (PyYAML's safe loader, as Snakemake's): `false` a
    boolean, `32` an integer, `010` the octal 8, `1e3` a string."""
    loader = yaml.SafeLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))
        return loader.construct_object(yaml.ScalarNode(tag, text))
    finally:
        loader.dispose()


def _scalar(value: str, types: list[str]) -> Any:
    """`value` (a string) as the first of `types` it spells; unchanged if it spells none."""
    text = value.strip()
    if "string" in types:
        return value
    if types:
        # First as the file would read it, so that `010` is 8 on the command line as in the file.
        read = yaml_scalar(text)
        if any(_is(read, kind) for kind in types):
            return read
    if ("integer" in types or "number" in types) and _INTEGER.fullmatch(text):
        return int(text)
    if "number" in types:
        if text.lower() in _YAML_FLOATS:
            return _YAML_FLOATS[text.lower()]
        try:
            return float(text)
        except ValueError:
            pass
    if "boolean" in types and text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    if "null" in types and text.lower() in _NULLS:
        return None
    return value


def _is(value: Any, kind: str) -> bool:
    if kind == "boolean" or isinstance(value, bool):
        return kind == "boolean" and isinstance(value, bool)
    return {"integer": isinstance(value, int), "number": isinstance(value, (int, float)), "null": value is None}.get(
        kind, False
    )


def _as_file(node: Any, seen: dict) -> Any:
    """`node` from Snakemake's BaseLoader (every scalar a string) with each scalar read as a file
    reads it; a node shared by YAML aliases is read once (an alias bomb stays as small as its text)."""
    if isinstance(node, str):
        return yaml_scalar(node)
    if not isinstance(node, (dict, list)):
        return node
    if id(node) not in seen:
        seen[id(node)] = (
            {k: _as_file(v, seen) for k, v in node.items()}
            if isinstance(node, dict)
            else [_as_file(v, seen) for v in node]
        )
    return seen[id(node)]


def read_command_line(config: dict, given: dict, schema: dict) -> dict:
    """`config` (the file with `given` laid over it by Snakemake) with every value `given` holds read
    as the file would read it: `--config 'model={kwargs: {use_norm: false}}'` is the boolean False,
    not the string 'false', and `'data={root: null}'` is null. `coerce` then treats both alike."""
    config = dict(config)
    for key, value in given.items():
        if key not in config:
            continue
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and isinstance(config[key], dict) and "properties" in sub:
            config[key] = read_command_line(config[key], value, sub)
        else:
            config[key] = _as_file(value, {})
    return config


def coerce(node: Any, schema: dict, seen: dict | None = None) -> Any:
    """`node` with every string the schema types otherwise turned into that type where it spells one,
    and an integer where the schema wants a string only (`--config experiment=2024`) as its digits.
    A container shared by YAML aliases is coerced once (`seen`), so an alias bomb stays small.
    A key of several forms (`oneOf`/`anyOf`: `barrier.spawn_steps` is a word or a list) is read in the
    form whose shape the value has."""
    types = _types(schema)
    seen = {} if seen is None else seen
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives and not types:
        if isinstance(node, list):
            arrays = [a for a in alternatives if "array" in _types(a)]
            return coerce(node, arrays[0], seen) if arrays else node
        # an alternative without a type is an enum of words: a string
        types = [kind for a in alternatives for kind in (_types(a) or ["string"])]
    if isinstance(node, (dict, list)) and (id(node), id(schema)) in seen:
        return seen[id(node), id(schema)][1]
    if isinstance(node, dict):
        properties = schema.get("properties", {})
        out = {k: coerce(v, properties[k], seen) if k in properties else v for k, v in node.items()}
        seen[id(node), id(schema)] = (node, out)  # node kept alive: its id stays its own
        return out
    if isinstance(node, list) and isinstance(schema.get("items"), dict):
        items = [coerce(v, schema["items"], seen) for v in node]
        seen[id(node), id(schema)] = (node, items)
        return items
    if isinstance(node, str):
        return _scalar(node, types)
    if types == ["string"] and isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    return node


def _leaves(node: Any, path: str, seen: set) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every scalar in `node`, each container once: YAML aliases share
    containers, and a config of 8 levels of 9 aliases expands to 43 million leaves (an alias bomb)."""
    if isinstance(node, (dict, list)):
        if id(node) in seen:
            return
        seen.add(id(node))
        items = sorted(node.items(), key=lambda kv: str(kv[0])) if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            yield from _leaves(
                value,
                f"{path}.{key}"
                if isinstance(node, dict) and path
                else str(key)
                if isinstance(node, dict)
                else f"{path}[{key}]",
                seen,
            )
    else:
        yield path, node


def non_finite(node: Any, path: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first number in `node` that is NaN or infinite, or None: no setting of
    an experiment means anything at NaN or infinity (null says "never" where a key allows it)."""
    return next(
        (
            (key, value)
            for key, value in _leaves(node, path, set())
            if isinstance(value, float) and not math.isfinite(value)
        ),
        None,
    )


def expanded_size(node: Any, seen: dict | None = None) -> int:
    """How many scalars `node` holds with every YAML alias expanded, counted without expanding them."""
    seen = {} if seen is None else seen
    if not isinstance(node, (dict, list)):
        return 1
    if id(node) not in seen:
        values = node.values() if isinstance(node, dict) else node
        seen[id(node)] = sum(expanded_size(v, seen) for v in values)
    return seen[id(node)]


def not_json(node: Any, path: str = "") -> tuple[str, object] | None:
    """(dotted key, value) of the first value in `node` that JSON cannot hold (YAML reads `2024-01-01`
    as a date), or None: every setting goes into the config hash and the jobs' params as JSON."""
    return next(
        (
            (key, value)
            for key, value in _leaves(node, path, set())
            if not isinstance(value, (str, int, float, type(None)))
        ),
        None,
    )


def _first_difference(ours: Any, theirs: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(ours, dict) and isinstance(theirs, dict) and ours.keys() == theirs.keys():
        return next(filter(None, (_first_difference(ours[k], theirs[k], f"{path}.{k}") for k in ours)), None)
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return next(
            filter(None, (_first_difference(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(ours, theirs)))), None
        )
    same = ours == theirs and type(ours) is type(theirs)
    return None if same else (path, ours, theirs)


def misread(entries: list[str], given: dict, schema: dict) -> str | None:
    """Why one of the `--config` words `entries` (`key=value`, as typed) reaches the workflow as
    something other than the config file would give, once coerced to the schema's types, or None.
    Snakemake reads a top-level value as a Python number where it can (`1e3`) and drops the quotes
    of a nested one (`{tag: "1"}`), so the text alone says what the user meant; `given` is what
    Snakemake made of it."""
    for entry in entries:
        key, _, text = entry.partition("=")
        if key not in given or not text:
            continue
        try:
            theirs = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # Snakemake's own reading stands (and the schema judges it)
        if expanded_size(theirs) > MAX_VALUES:
            continue  # an alias bomb: the config check refuses it without walking it
        ours = coerce({key: _as_file(given[key], {})}, schema)[key]
        found = _first_difference(ours, coerce({key: theirs}, schema)[key], key)
        if found:
            path, ours, theirs = found
            return (
                f"{path}: {theirs!r} in a config file, but {ours!r} from the command line (Snakemake drops "
                "quotes and reads numbers its own way there); set it in the config file"
            )
    return None


def config_words(argv: list[str]) -> list[str]:
    """The `key=value` words of `--config` (or `-C`) on a Snakemake command line."""
    words, taking = [], False
    for word in argv[1:]:
        if word in ("--config", "-C"):
            taking = True
        elif word.startswith("-"):
            taking = False
        elif taking:
            words.append(word)
    return words
