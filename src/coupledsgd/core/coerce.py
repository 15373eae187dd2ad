"""Config values as the schema types them: command-line strings coerced, non-finite numbers found.

Snakemake parses a top-level `--config key=value` as a number where it can, but a nested one
(`--config 'training={lr: 0.05}'`) with YAML's BaseLoader, which leaves every scalar a string. Those
strings are coerced here to the type the schema asks for, where they spell one; a string that does
not stays as typed, so the schema's error quotes what the user wrote.
"""

from __future__ import annotations

import math
import re
from typing import Any

_INTEGER = re.compile(r"[-+]?\d+")
# YAML's spellings of the special floats, beside Python's (nan, inf), which float() reads itself.
_YAML_FLOATS = {".nan": math.nan, ".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NULLS = {"null", "~", "none"}


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _scalar(value: str, types: list[str]) -> Any:
    """`value` (a string) as the first of `types` it spells; unchanged if it spells none."""
    text = value.strip()
    if "string" in types:
        return value
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


def coerce(node: Any, schema: dict) -> Any:
    """`node` with every string the schema types otherwise turned into that type where it spells one,
    and an integer where the schema wants a string only (`--config experiment=2024`) as its digits."""
    types = _types(schema)
    if isinstance(node, dict):
        properties = schema.get("properties", {})
        return {k: coerce(v, properties[k]) if k in properties else v for k, v in node.items()}
    if isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [coerce(v, schema["items"]) for v in node]
    if isinstance(node, str):
        return _scalar(node, types)
    if types == ["string"] and isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    return node


def non_finite(node: Any, path: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first number in `node` that is NaN or infinite, or None: no setting of
    an experiment means anything at NaN or infinity (null says "never" where a key allows it)."""
    if isinstance(node, (dict, list)):
        items = sorted(node.items()) if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            found = non_finite(value, f"{path}.{key}" if isinstance(node, dict) and path else
                               str(key) if isinstance(node, dict) else f"{path}[{key}]")
            if found:
                return found
    elif isinstance(node, float) and not math.isfinite(node):
        return path, node
    return None
