"""The dataset readers on fake datasets written in the real on-disk layouts."""

import hashlib
import pickle
import re
from urllib.error import URLError

import numpy as np
import pytest
import torch
from fixtures import CIFAR_KNOWN_PIXEL, tiny_colour, trust_fake_cifar10, write_fake_cifar10, write_fake_tinyimagenet
from PIL import Image

from coupledsgd.core.errors import DataError
from coupledsgd.engine.readers import read_cifar10, read_tinyimagenet


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    written = write_fake_cifar10(tmp_path, n_train=53, n_test=17)
    trust_fake_cifar10(monkeypatch, written["md5"])
    return tmp_path, written


@pytest.fixture
def tiny(tmp_path):
    return write_fake_tinyimagenet(tmp_path, n_classes=3, n_train_per_class=4, n_val=7)


# --- CIFAR-10 -------------------------------------------------------------------------------------

def test_cifar10_contents(cifar):
    root, w = cifar
    d = read_cifar10(root)
    assert d["x_train"].shape == (53, 3, 32, 32) and d["x_test"].shape == (17, 3, 32, 32)
    assert d["x_train"].dtype == torch.uint8 and d["y_train"].dtype == torch.int64
    assert d["x_train"].is_contiguous()
    assert torch.equal(d["x_train"], torch.from_numpy(w["x_train"]))
    assert torch.equal(d["x_test"], torch.from_numpy(w["x_test"]))
    assert d["y_train"].tolist() == w["y_train"].tolist() and d["y_test"].tolist() == w["y_test"].tolist()
    assert d["classes"] == w["classes"] and d["classes"][0] == "airplane"
    r, c, rgb = CIFAR_KNOWN_PIXEL
    assert d["x_train"][0, :, r, c].tolist() == list(rgb)


def test_cifar10_fixture_pickles_like_the_real_files(cifar):
    # The real files are Python 2 pickles: byte-string keys under encoding="bytes", str under "latin1".
    root, _ = cifar
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert set(entry) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape[1] == 3072
    assert entry[b"batch_label"] == b"training batch 1 of 5"


def test_cifar10_md5_check_stays_live(tmp_path):
    write_fake_cifar10(tmp_path)  # torchvision's real md5 table, which no fake matches
    with pytest.raises(DataError, match="data_batch_1.*md5"):
        read_cifar10(tmp_path)


def test_cifar10_download_skips_fetch_when_files_match(cifar, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    root, w = cifar
    assert torch.equal(read_cifar10(root, download=True)["x_test"], torch.from_numpy(w["x_test"]))


def test_cifar10_download_failure(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise URLError("no network")
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + ": could not download CIFAR-10 .*no network"):
        read_cifar10(tmp_path, download=True)


def test_cifar10_missing_root(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        read_cifar10(tmp_path / "nope")


def test_cifar10_missing_batches_folder(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_cifar10(tmp_path)


@pytest.mark.parametrize("name", ["data_batch_4", "test_batch", "batches.meta"])
def test_cifar10_missing_file(cifar, name):
    root, _ = cifar
    (root / "cifar-10-batches-py" / name).unlink()
    with pytest.raises(DataError, match=f"{name}: .*missing"):
        read_cifar10(root)


def test_cifar10_truncated_file(cifar):
    root, _ = cifar
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3: .*corrupt or truncated"):
        read_cifar10(root)


def test_cifar10_unpicklable_file_with_matching_md5(cifar, monkeypatch):
    # A file torchvision accepts by md5 but cannot unpickle: the error must still name it.
    root, w = cifar
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(b"not a pickle at all")
    trust_fake_cifar10(monkeypatch, {**w["md5"], "data_batch_2": hashlib.md5(path.read_bytes()).hexdigest()})
    with pytest.raises(DataError, match="data_batch_2: .*unreadable"):
        read_cifar10(root)


# --- Tiny ImageNet --------------------------------------------------------------------------------

def _nearest_class(img, n_classes):
    mean = img.double().mean(dim=(1, 2))
    return int(torch.argmin(torch.stack([(mean - torch.tensor(tiny_colour(c), dtype=torch.double)).abs().max()
                                          for c in range(n_classes)])))


@pytest.mark.parametrize("given", ["folder", "parent"])
def test_tinyimagenet_contents(tiny, given):
    d = read_tinyimagenet(tiny["folder"] if given == "folder" else tiny["folder"].parent)
    assert d["classes"] == tiny["wnids"] and d["classes"] != sorted(d["classes"])  # line order, not sorted
    assert d["x_train"].shape == (12, 3, 64, 64) and d["x_test"].shape == (7, 3, 64, 64)
    assert d["x_train"].dtype == torch.uint8 and d["y_train"].dtype == torch.int64 and d["y_test"].dtype == torch.int64
    assert d["y_train"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert d["y_test"].tolist() == tiny["val_labels"]
    for x, y in zip(torch.cat([d["x_train"], d["x_test"]]), torch.cat([d["y_train"], d["y_test"]])):
        mean = x.double().mean(dim=(1, 2))
        assert (mean - torch.tensor(tiny_colour(int(y)), dtype=torch.double)).abs().max() < 8  # JPEG is lossy
        assert _nearest_class(x, 3) == int(y)


def test_tinyimagenet_greyscale_image_becomes_rgb(tiny):
    path = tiny["folder"] / "val" / "images" / "val_0.JPEG"
    Image.new("L", (64, 64), 128).save(path, "JPEG")
    d = read_tinyimagenet(tiny["folder"])
    assert d["x_test"].shape[1] == 3 and (d["x_test"][0].int() - 128).abs().max() <= 2


def test_tinyimagenet_missing_root(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        read_tinyimagenet(tmp_path / "nope")


def test_tinyimagenet_missing_wnids(tiny):
    (tiny["folder"] / "wnids.txt").unlink()
    with pytest.raises(DataError, match="wnids.txt"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_missing_val_annotations(tiny):
    (tiny["folder"] / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="val_annotations.txt"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_wrong_image_size(tiny):
    w = tiny["wnids"][1]
    path = tiny["folder"] / "train" / w / "images" / f"{w}_2.JPEG"
    Image.new("RGB", (64, 32)).save(path, "JPEG")
    with pytest.raises(DataError, match=f"{w}_2.JPEG: image is 64x32"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_unknown_wnid_in_annotations(tiny):
    ann = tiny["folder"] / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines[2] = lines[2].replace(tiny["wnids"][0], "n00000001").replace(tiny["wnids"][1], "n00000001").replace(
        tiny["wnids"][2], "n00000001")
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="val_annotations.txt: line 3 .*n00000001"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_missing_val_image(tiny):
    (tiny["folder"] / "val" / "images" / "val_4.JPEG").unlink()
    with pytest.raises(DataError, match="val_4.JPEG: image file missing"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_missing_train_class_folder(tiny):
    w = tiny["wnids"][2]
    for p in (tiny["folder"] / "train" / w / "images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=f"{w}/images: no .JPEG"):
        read_tinyimagenet(tiny["folder"])


def test_tinyimagenet_corrupt_image(tiny):
    path = tiny["folder"] / "val" / "images" / "val_1.JPEG"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="val_1.JPEG: image unreadable"):
        read_tinyimagenet(tiny["folder"])
