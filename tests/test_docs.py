"""The manual (README.md and docs/) holds what it shows: the site builds with every link and anchor
resolved, the key table is the schema's, the claims table is docs/claims.csv's, every test it names
exists, and every command block runs from the page's own text or says why it cannot.

Each fenced block in a shell or Python language carries a marker on the line before it:
  <!-- run -->            run as written (bash) in a copy of the workflow; must exit 0
  <!-- run: dry -->       the same, with every `snakemake` given `-n`: the plan is made, no job runs
  <!-- output -->         (a text block) the exact stdout of the `run` block before it
  <!-- recipe: NAME -->   a Parquet recipe, run by tests/test_workflow.py against the smoke results
  <!-- excerpt: PATH -->  lines that appear in the file PATH, as written
  <!-- not run: REASON --> needs what the tests do not have (a GPU, SLURM, the network, a finished run)
Text blocks (listings, messages) need no marker.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fixtures import copy_workflow

from coupledsgd.analysis.claims import markdown
from coupledsgd.core.config import validate
from coupledsgd.core.grid import members

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGUAGES = {"bash", "sh", "console", "python"}
FENCE = re.compile(r"^(?:<!-- (?P<marker>[^\n]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.S | re.M)
MARKER = re.compile(r"^(run|run: dry|output|recipe: \S+|excerpt: \S+|not run: \S.*)$")


def blocks(page: Path) -> list[dict]:
    """Every fenced block of a page: its marker (or None), language, code and line number."""
    text = page.read_text()
    return [{"page": page, "marker": m["marker"], "lang": m["lang"], "code": m["code"],
             "line": text.count("\n", 0, m.start("lang")) + 1} for m in FENCE.finditer(text)]


def ids(block) -> str:
    return f"{block['page'].relative_to(ROOT)}:{block['line']}"


ALL = [b for page in PAGES for b in blocks(page)]
RUN = [b for b in ALL if b["marker"] in ("run", "run: dry")]


def indented_code(page: Path) -> list[str]:
    """Lines that open an indented code block: four spaces after a blank line, outside fences, where
    the paragraph before is not a list item (whose continuation lines these would be)."""
    found, fenced, previous = [], False, ["", ""]
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and line.strip() and previous[-1] == "" \
                and not re.match(r"^\s*([-*]|\d+\.) ", previous[-2]):
            found.append(line.strip())
        if line.strip() or previous[-1]:
            previous = [previous[-1], line]
    return found


def test_every_code_block_is_run_or_says_why_not():
    unmarked = [ids(b) for b in ALL if b["lang"] in CODE_LANGUAGES and b["marker"] is None]
    assert not unmarked, f"code blocks without a marker (see tests/test_docs.py): {unmarked}"
    bad = [(ids(b), b["marker"]) for b in ALL if b["marker"] is not None and not MARKER.match(b["marker"])]
    assert not bad, f"unknown markers: {bad}"
    for block in ALL:
        if block["marker"] == "output":
            before = [b for b in ALL if b["page"] == block["page"] and b["line"] < block["line"]][-1]
            assert before["marker"] == "run", f"{ids(block)}: an output block follows the run block it shows"


def test_the_pages_have_no_indented_code_but_the_readmes_two_commands():
    for page in PAGES[1:]:
        assert indented_code(page) == [], f"{page.name}: write code as a fenced block with a marker"
    assert indented_code(ROOT / "README.md") == [README_RUN, 'pip install -e ".[test]" && python -m pytest']


def _workdir(tmp_path: Path) -> Path:
    """A copy of the workflow as a user has it: configs, examples and the GPU rates coupledsgd cost reads.
    `snakemake` is given -n when the block is a dry run; `pip install -e .` is a no-op, since the tests
    run in the installed environment."""
    workdir = copy_workflow(tmp_path / "work")
    shutil.copytree(ROOT / "examples", workdir / "examples", ignore=shutil.ignore_patterns("*.npz"))
    shutil.copytree(ROOT / "bench/results", workdir / "bench/results")
    return workdir


def _run(code: str, tmp_path: Path, dry: bool) -> subprocess.CompletedProcess:
    workdir, bin_dir = _workdir(tmp_path), tmp_path / "bin"
    bin_dir.mkdir()
    if dry:
        (bin_dir / "snakemake").write_text(f'#!/bin/sh\nexec {shutil.which("snakemake")} -n "$@"\n')
    (bin_dir / "pip").write_text('#!/bin/sh\n[ "$*" = "install -e ." ] && exit 0\n'
                                 'echo "the docs test runs no pip but pip install -e ." >&2; exit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("block", RUN, ids=ids)
def test_a_command_block_runs_as_written(block, tmp_path):
    result = _run(block["code"], tmp_path, dry=block["marker"] == "run: dry")
    assert result.returncode == 0, f"{ids(block)}:\n{block['code']}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    if block["marker"] == "run: dry":
        assert "This was a dry-run" in result.stdout, result.stdout[-2000:]
    after = [b for b in ALL if b["page"] == block["page"] and b["line"] > block["line"]]
    if after and after[0]["marker"] == "output":
        assert result.stdout == after[0]["code"], f"{ids(after[0])} differs from what the command prints"


README_RUN = "pip install -e . && snakemake --cores 2"


def test_the_readmes_first_command_plans_the_default_experiment(tmp_path):
    command = re.search(r"^from nothing to its figures:\n\n {4}(.+)$", (ROOT / "README.md").read_text(), re.M)[1]
    assert command == README_RUN
    result = _run(command, tmp_path, dry=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The job counts the README states for the default experiment are the plan's.
    stated = re.search(r"It is (\d+) jobs: (\d+) parent states,\s+(\d+) member trainings in (\d+) jobs, (\d+) barrier",
                       (ROOT / "README.md").read_text())
    total, parents, trainings, train_jobs, barriers = map(int, stated.groups())
    assert len(members(validate(yaml.safe_load((ROOT / "config.yaml").read_text())))) == trainings
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, re.M)}
    assert (counts["total"], counts["parent_state"], counts["train_members"], counts["barrier"]) == \
        (total, parents, train_jobs, barriers), result.stdout[-2000:]


@pytest.mark.parametrize("block", [b for b in ALL if (b["marker"] or "").startswith("excerpt: ")], ids=ids)
def test_an_excerpt_is_the_files_own_text(block):
    source = (ROOT / block["marker"].removeprefix("excerpt: ")).read_text()
    for line in block["code"].splitlines():
        code = line.split("#")[0].rstrip()
        if code.strip() != "...":
            assert code in source, f"{ids(block)}: {code!r} is not in {block['marker']}"


def test_the_manual_builds_with_every_link_and_anchor_resolved(tmp_path):
    mkdocs = shutil.which("mkdocs") or pytest.fail("mkdocs not installed (pip install -e '.[test]')")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site/configuration/index.html").exists()


def _slug(heading: str) -> str:
    """The anchor a code host and MkDocs both give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readmes_links_resolve():
    # MkDocs checks the pages under docs/; the README lies outside them.
    text = (ROOT / "README.md").read_text()
    for target, anchor in re.findall(r"\]\(([^)#:]+)(?:#([\w-]+))?\)", text):
        path = ROOT / target
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            headings = [_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")]
            assert anchor in headings, f"README.md links to {target}#{anchor}, which has no such heading"


def test_every_test_the_manual_names_exists():
    named = {m for page in PAGES for m in re.findall(r"tests/(test_\w+\.py)::(test_\w+)", page.read_text())}
    assert named, "the manual names the tests that hold its promises"
    for file, name in named:
        assert re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), re.M), f"tests/{file}::{name}"


def test_the_configuration_page_is_generated_from_the_schema():
    result = subprocess.run([sys.executable, "docs/gen_configuration.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    schema = yaml.safe_load((ROOT / "src/coupledsgd/core/config.schema.yaml").read_text())
    page = (ROOT / "docs/configuration.md").read_text()
    keys = [f"{name}.{key}" if key else name for name, spec in schema["properties"].items()
            for key in spec.get("properties") or [None]]
    missing = [key for key in keys if f"| `{key}` |" not in page]
    assert len(keys) > 40 and not missing, f"keys of the schema missing from docs/configuration.md: {missing}"


def test_the_claims_page_shows_docs_claims_csv():
    table = markdown(pd.read_csv(ROOT / "docs/claims.csv"))
    assert table in (ROOT / "docs/claims.md").read_text(), "docs/claims.md: paste claims.markdown(docs/claims.csv)"
