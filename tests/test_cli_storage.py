"""The file system refusing the results, through the `snakemake` command as a user runs it: one line
naming the path and the reason, on the console and (for a job) in the job's log, no traceback, and no
file left under a final name.

A full disk and a read-only file system are small tmpfs mounts over results/, where this machine lets
the test mount one (else skipped, with the reason); permission denied is a folder without write
permission, which does not deny root (skipped as root).
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures import copy_workflow
from test_cli_failures import one_line
from test_package import TINY

from coupledsgd.core.files import atomic_path
from coupledsgd.core.errors import StorageError


@pytest.fixture
def workdir(tmp_path):
    copy_workflow(tmp_path)
    (tmp_path / "configs/tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "results").mkdir()
    return tmp_path


@pytest.fixture
def mount(workdir):
    """mount(options): a tmpfs over workdir/results with `options`, or the test skipped saying why."""
    mounted = []

    def mount(options: str) -> Path:
        where = workdir / "results"
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def snakemake(workdir, *targets):
    return subprocess.run(["snakemake", *targets, "--cores", "1", "--configfile", "configs/tiny.yaml"], cwd=workdir,
                          capture_output=True, text=True, timeout=300)


def refused_before_any_job(result, line: str) -> None:
    assert one_line(result, "Error: ") == line
    assert "Traceback" not in result.stderr and "rule prepare_data" not in result.stdout + result.stderr


def test_a_full_disk_ends_the_job_with_one_line_naming_the_file(workdir, mount):
    results = mount("size=64k")  # smaller than the dataset cache, the first file written
    result = snakemake(workdir, "results/tiny/data.pt")
    line = "StorageError: cannot write results/tiny/data.pt: No space left on device"
    assert one_line(result, "StorageError") == line
    assert "Traceback" not in result.stderr
    assert (workdir / "logs/tiny/prepare_data.log").read_text().splitlines()[-1] == line
    assert [p for p in results.rglob("*") if p.is_file()] == []  # neither data.pt nor its temporary file


def test_a_read_only_file_system_stops_the_run_before_any_job(workdir, mount):
    mount("ro,size=64k")
    refused_before_any_job(snakemake(workdir),
                           "Error: cannot write results/tiny: results is on a read-only file system")


def test_a_file_where_a_folder_should_be_stops_the_run_before_any_job(workdir):
    (workdir / "results/tiny").mkdir()
    (workdir / "results/tiny/predictions").write_text("")
    refused_before_any_job(snakemake(workdir), "Error: cannot write results/tiny/predictions: "
                                               "results/tiny/predictions is a file, not a folder")
    assert sorted(p.name for p in (workdir / "results/tiny").iterdir()) == ["predictions"]


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root, whom a folder's permissions do not deny")
def test_a_folder_without_write_permission_stops_the_run_before_any_job(workdir):
    (workdir / "results").chmod(0o555)
    try:
        refused_before_any_job(snakemake(workdir), "Error: cannot write results/tiny: results is not writable "
                                                   "(permission denied)")
    finally:
        (workdir / "results").chmod(0o755)


def test_a_write_under_a_file_names_the_file_and_leaves_nothing(tmp_path):
    # Deeper than the folders the workflow checks first: the job's own write says it.
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions/no-coupling").write_text("")
    target = tmp_path / "predictions/no-coupling/t0/p0/c0.parquet"
    with pytest.raises(StorageError) as error:
        with atomic_path(target) as tmp:
            tmp.write_text("never")
    assert str(error.value) == f"cannot write {target}: {tmp_path}/predictions/no-coupling is a file, not a folder"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["no-coupling", "predictions"]


def test_a_refusal_outside_a_write_is_one_line_and_other_os_errors_keep_their_traceback(tmp_path):
    from coupledsgd.jobs.runtime import run_stage

    log = tmp_path / "job.log"

    def denied(log_path):
        raise PermissionError(13, "Permission denied", "results/x/children")

    with pytest.raises(SystemExit) as exited:
        run_stage(denied, str(log), exit_when_done=False)
    line = "StorageError: cannot access results/x/children: Permission denied"
    assert exited.value.code == line and log.read_text() == line + "\n"

    def broken(log_path):
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        run_stage(broken, str(log), exit_when_done=False)
