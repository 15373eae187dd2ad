"""Write the key table of docs/configuration.md from the config schema, so the page cannot drift from it.

    python docs/gen_configuration.py           rewrite the table in place
    python docs/gen_configuration.py --check   exit 1 if the page differs from the schema

The table sits between the two GENERATED markers; the prose around it is written by hand.
tests/test_docs.py checks that the committed page equals what this script writes.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src/coupledsgd/core/config.schema.yaml"
PAGE = ROOT / "docs/configuration.md"
BEGIN = "<!-- GENERATED from src/coupledsgd/core/config.schema.yaml by docs/gen_configuration.py: do not edit -->"
END = "<!-- END GENERATED -->"


def _code(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return "`" + yaml.safe_dump(value, default_flow_style=True, width=1000).strip() + "`"
    return f"`{value}`"


def _allowed(spec: dict) -> str:
    """What a value may be, in words: the type, its choices and bounds."""
    if "enum" in spec:
        return ", ".join(_code(v) for v in spec["enum"])
    if "anyOf" in spec:  # model.name: a built-in name or an import path
        return " or ".join(_allowed(option) if "enum" in option else "`package.module:callable`"
                           for option in spec["anyOf"])
    types = spec.get("type", "any")
    types = [types] if isinstance(types, str) else list(types)
    if types[0] == "array":
        items = spec.get("items", {})
        if "enum" in items:
            text = "list of " + ", ".join(_code(v) for v in items["enum"])
        else:
            text = f"list of {_allowed(items)}"
        if "minItems" in spec:
            text += f", at least {spec['minItems']}"
        return text
    text = " or ".join("null" if t == "null" else t for t in types)
    bounds = []
    if "minimum" in spec:
        bounds.append(f">= {spec['minimum']}")
    if "exclusiveMinimum" in spec:
        bounds.append(f"> {spec['exclusiveMinimum']}")
    if "exclusiveMaximum" in spec:
        bounds.append(f"< {spec['exclusiveMaximum']}")
    elif "maximum" in spec:
        bounds.append(f"<= {spec['maximum']}")
    if "maxLength" in spec:
        bounds.append(f"at most {spec['maxLength']} characters")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _cell(text: str) -> str:
    text = " ".join(str(text).split())
    # Markdown would read "<GPUs ...>" as an HTML tag and "**kwargs" as bold.
    return text.replace("|", "\\|").replace("<", "&lt;").replace("**", "\\*\\*")


def _rows(properties: dict, required: list, prefix: str = ""):
    for name, spec in properties.items():
        key = prefix + name
        if "properties" in spec:
            if spec.get("description"):
                yield key, "section", "-", spec["description"]
            yield from _rows(spec["properties"], spec.get("required", []), key + ".")
            continue
        default = "(required)" if name in required else _code(spec["default"]) if "default" in spec else "-"
        yield key, _allowed(spec), default, spec.get("description", "")


def render(schema: dict) -> str:
    """The table of every key: name, allowed values, default, meaning."""
    lines = ["| key | allowed | default | meaning |", "|---|---|---|---|"]
    for key, allowed, default, meaning in _rows(schema["properties"], schema.get("required", [])):
        lines.append(f"| `{key}` | {_cell(allowed)} | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def page_text(page: str, schema: dict) -> str:
    """The page with the text between its markers replaced by the table."""
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(page):
        raise SystemExit(f"{PAGE}: the markers of the generated table are missing")
    return pattern.sub(lambda _: f"{BEGIN}\n{render(schema)}{END}", page)


def main(argv: list[str]) -> int:
    schema = yaml.safe_load(SCHEMA.read_text())
    page = PAGE.read_text()
    new = page_text(page, schema)
    if "--check" in argv:
        if new != page:
            print(f"{PAGE.relative_to(ROOT)} differs from the schema: run python docs/gen_configuration.py")
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
