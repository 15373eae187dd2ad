"""The bad-input battery, stage by stage: every bad dataset or artifact handed to a stage ends it with one
line naming the file, a non-zero exit status, and no finished output touched. The same through the
`snakemake` command, with the bad configs: tests/test_cli_failures.py."""

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fixtures import trust_fake_cifar10, write_fake_cifar10, write_fake_tinyimagenet

from coupledsgd.jobs.runtime import run_stage
from coupledsgd.jobs.stages import parent_state, prepare_data, train_members
from coupledsgd.jobs.analysis import metric_tables

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"seed": 0, "device": "cpu", "augment": False, "model": {"name": "cnn1d"},
          "training": {"steps": 16, "batch_size": 32, "lr": 0.1}, "config_hash": "h1", "threads": 1,
          "jobs_per_device": 1, "checkpoint": {"every_steps": None, "every_seconds": None}}


def data_settings(**given) -> dict:
    """The `data` settings prepare_data gets from its rule: every key, the schema's defaults filled in."""
    return {"root": None, "download": False, "n_train": None, **given}


def snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails_with_one_line(stage, *args, naming: str):
    with pytest.raises(SystemExit) as stop:
        run_stage(stage, *args, exit_when_done=False)
    message = stop.value.code
    assert isinstance(message, str) and message.count("\n") == 0, message  # one line, exit status 1
    assert naming in message, message
    return message


# --- data ----------------------------------------------------------------------------------------------

def test_missing_cifar10_root(tmp_path):
    fails_with_one_line(prepare_data, data_settings(name="cifar10", root=str(tmp_path / "cifar")),
                        str(tmp_path / "d.pt"),
                        None, naming=str(tmp_path / "cifar"))
    assert not (tmp_path / "d.pt").exists()


def test_truncated_cifar10_batch(tmp_path, monkeypatch):
    written = write_fake_cifar10(tmp_path, n_train=20, n_test=10)
    trust_fake_cifar10(monkeypatch, written["md5"])
    batch = tmp_path / "cifar-10-batches-py/data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    fails_with_one_line(prepare_data, data_settings(name="cifar10", root=str(tmp_path)), str(tmp_path / "d.pt"), None,
                        naming="data_batch_3")


def test_tinyimagenet_without_val_annotations(tmp_path):
    write_fake_tinyimagenet(tmp_path)
    annotations = next(tmp_path.rglob("val_annotations.txt"))
    annotations.unlink()
    fails_with_one_line(prepare_data, data_settings(name="tinyimagenet", root=str(tmp_path)), str(tmp_path / "d.pt"),
                        None, naming="val_annotations.txt")


def test_tinyimagenet_wrong_image_size(tmp_path):
    from PIL import Image

    write_fake_tinyimagenet(tmp_path)
    image = sorted(tmp_path.rglob("val_*.JPEG"))[0]
    Image.new("RGB", (32, 32)).save(image, format="JPEG")
    fails_with_one_line(prepare_data, data_settings(name="tinyimagenet", root=str(tmp_path)), str(tmp_path / "d.pt"),
                        None, naming=image.name)


def test_more_training_examples_than_the_dataset_has(tmp_path):
    fails_with_one_line(prepare_data, data_settings(name="digits", n_train=5000), str(tmp_path / "d.pt"), None,
                        naming="data.n_train")


# --- artifacts -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(mnist1d_path, tmp_path_factory):
    """A parent state and two members' outputs, as a finished run leaves them."""
    root = tmp_path_factory.mktemp("finished")
    parent_state(str(mnist1d_path), str(root / "parent.pt"), {**PARAMS, "parent": 0, "t": 8})
    for c in (0, 1):
        out = {k: str(root / f"c{c}" / f"{k}.{ext}") for k, ext in
               (("final", "pt"), ("predictions", "parquet"), ("trajectory", "parquet"))}
        train_member(str(mnist1d_path), str(root / "parent.pt"), out,
                     {**PARAMS, "condition": "coupled-to-t", "t": 8, "members": [[0, c]]})
    return root


def member(condition="coupled-to-t", **extra):
    return {**PARAMS, "condition": condition, "t": 8, "members": [[0, 2]], **extra}


def train_member(data, parent, out, params, log=None):
    """One member's training job, as the workflow runs it with `job_shape: member`."""
    train_members(data, {0: parent}, [out], params, log)


def outputs(folder):
    return {"final": str(folder / "final.pt"), "predictions": str(folder / "p.parquet"),
            "trajectory": str(folder / "t.parquet")}


def test_truncated_checkpoint(mnist1d_path, finished, tmp_path):
    bad = tmp_path / "parent.pt"
    bad.write_bytes((finished / "parent.pt").read_bytes()[:5000])
    before = snapshot(finished)
    fails_with_one_line(train_member, str(mnist1d_path), str(bad), outputs(tmp_path / "out"), member(), None,
                        naming=str(bad))
    assert snapshot(finished) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, what", [
    (lambda s: s.update(model_name="resnet20"), "model 'resnet20'"),       # another model
    (lambda s: s["info"].update(config_hash="other"), "config 'other'"),   # another experiment
    (lambda s: s["info"].update(parent=1), "parent 1"),                     # another parent
    (lambda s: s.update(step=4), "step 4"),                                 # another spawn step
])
def test_foreign_checkpoint(mnist1d_path, finished, tmp_path, change, what):
    state = torch.load(finished / "parent.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "foreign.pt")
    message = fails_with_one_line(train_member, str(mnist1d_path), str(tmp_path / "foreign.pt"),
                                  outputs(tmp_path / "out"), member(), None, naming=str(tmp_path / "foreign.pt"))
    assert what in message


def test_truncated_dataset_cache(finished, tmp_path):
    bad = tmp_path / "data.pt"
    bad.write_bytes(b"\x80\x02not a torch file")
    fails_with_one_line(train_member, str(bad), str(finished / "parent.pt"), outputs(tmp_path / "out"), member(),
                        None, naming=str(bad))


def _metrics(finished, tmp_path, predictions):
    out = {k: str(tmp_path / "metrics" / f"{k}.parquet") for k in ("members", "ensembles", "pairs", "forgetting")}
    out["summary"] = str(tmp_path / "metrics" / "summary.csv")
    trajectories = [str(finished / f"c{c}/trajectory.parquet") for c in (0, 1)]
    settings = {"bootstrap": 10, "ece_bins": 15, "mace_bins": 15, "forgetting_epochs": None}
    return metric_tables, predictions, trajectories, out, settings


def rewrite(source: Path, target: Path, change):
    """A copy of a predictions file, with its metadata, changed by `change(table)`."""
    pq.write_table(change(pq.read_table(source)), target)
    return target


def with_value(column, example, value):
    def change(table):
        values = table.column(column).to_numpy().copy()
        values[example] = value
        i = table.column_names.index(column)
        return table.set_column(i, column, pa.array(values))
    return change


@pytest.mark.parametrize("change, naming", [
    (lambda table: table.drop_columns(["logit_3"]), "missing column(s) logit_3"),
    (with_value("logit_5", 7, np.nan), "non-finite logit(s), the first nan at example_id 7, column logit_5"),
    (with_value("logit_0", 2, np.inf), "non-finite logit(s), the first inf at example_id 2, column logit_0"),
])
def test_bad_predictions(finished, tmp_path, change, naming):
    bad = rewrite(finished / "c1/predictions.parquet", tmp_path / "c1.parquet", change)
    before = snapshot(finished)
    stage, *args = _metrics(finished, tmp_path, [str(finished / "c0/predictions.parquet"), str(bad)])
    message = fails_with_one_line(stage, *args, None, naming=str(bad))
    assert naming in message and snapshot(finished) == before
    assert not (tmp_path / "metrics").exists() or not any((tmp_path / "metrics").iterdir())


def test_predictions_missing_a_key_column(finished, tmp_path):
    bad = rewrite(finished / "c1/predictions.parquet", tmp_path / "c1.parquet", lambda t: t.drop_columns(["label"]))
    stage, *args = _metrics(finished, tmp_path, [str(finished / "c0/predictions.parquet"), str(bad)])
    fails_with_one_line(stage, *args, None, naming="missing column(s) label")


def test_truncated_parquet(finished, tmp_path):
    bad = tmp_path / "c1.parquet"
    bad.write_bytes((finished / "c1/predictions.parquet").read_bytes()[:300])
    stage, *args = _metrics(finished, tmp_path, [str(finished / "c0/predictions.parquet"), str(bad)])
    fails_with_one_line(stage, *args, None, naming=str(bad))


def of_config(config_hash):
    """The file as another config would have written it: metadata and column."""
    def change(table):
        table = table.set_column(table.column_names.index("config_hash"), "config_hash",
                                 pa.array([config_hash] * table.num_rows).dictionary_encode())
        return table.replace_schema_metadata({**table.schema.metadata,
                                              b"coupledsgd.config_hash": config_hash.encode()})
    return change


def test_predictions_of_another_config_are_not_mixed_into_an_ensemble(finished, tmp_path):
    rewrite(finished / "c1/predictions.parquet", tmp_path / "c1.parquet", of_config("h2"))
    stage, *args = _metrics(finished, tmp_path, [str(finished / "c0/predictions.parquet"), str(tmp_path / "c1.parquet")])
    message = fails_with_one_line(stage, *args, None, naming="config hash")
    assert str(tmp_path / "c1.parquet") in message and "h1" in message and "h2" in message


def test_a_config_hash_column_that_disagrees_with_the_metadata(finished, tmp_path):
    bad = rewrite(finished / "c1/predictions.parquet", tmp_path / "c1.parquet",
                  lambda t: of_config("h2")(t).replace_schema_metadata(t.schema.metadata))
    stage, *args = _metrics(finished, tmp_path, [str(finished / "c0/predictions.parquet"), str(bad)])
    message = fails_with_one_line(stage, *args, None, naming=str(bad))
    assert "column config_hash holds ['h2'], but the schema metadata says 'h1'" in message


def test_files_without_the_origin_columns_still_read(finished, tmp_path):
    """Files of versions before the experiment and config_hash columns: the metadata decides."""
    old = [rewrite(finished / f"c{c}/predictions.parquet", tmp_path / f"c{c}.parquet",
                   lambda t: t.drop_columns(["config_hash"])) for c in (0, 1)]
    stage, *args = _metrics(finished, tmp_path, [str(p) for p in old])
    run_stage(stage, *args, None, exit_when_done=False)
    assert pq.read_schema(tmp_path / "metrics/members.parquet").metadata[b"coupledsgd.config_hash"] == b"h1"
