"""Settings given on the `snakemake` command line (`--config`), as a user types them: nested values
arrive as strings and take the schema's types; a value still wrong, or not finite, stops the run before
any job with one line quoting what was typed (docs/configuration.md, "Settings on the command line")."""

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from fixtures import copy_workflow
from test_cli_failures import one_line
from test_package import TINY


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("overrides"))
    (workdir / "configs/tiny.yaml").write_text(yaml.safe_dump(TINY))
    (workdir / "configs/nan.yaml").write_text(yaml.safe_dump(TINY).replace("lr: 0.1", "lr: .nan"))
    return workdir


def dry_run(workdir, *args):
    return subprocess.run(["snakemake", "--dry-run", *args], cwd=workdir, capture_output=True, text=True, timeout=300)


CASES = [  # (arguments, the line the user sees, or None: the run plans)
    (["--config", "experiment=lr0.05-seed1", "seed=1", "training={lr: 0.05, warmup_steps: 2, nesterov: false}",
      "spawn_steps=[0, 4]"], None),
    (["--config", "training={lr: fast}"], "Error in config: training.lr: 'fast' is not of type 'number'"),
    (["--configfile", "configs/nan.yaml"], "Error in config: training.lr: nan is not a finite number"),
]


def test_command_line_settings(workdir):
    runs = [args if "--configfile" in args else [*args, "--configfile", "configs/tiny.yaml"] for args, _ in CASES]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda args: dry_run(workdir, *args), runs))
    for (args, line), result in zip(CASES, results):
        if line is None:
            assert result.returncode == 0, (args, result.stderr[-2000:])
            assert "results/lr0.05-seed1/parents/p0/step4.pt" in result.stdout
        else:
            assert one_line(result, "Error in config:") == line, args
            assert "Traceback" not in result.stderr
