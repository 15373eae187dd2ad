"""Write small fake datasets in the exact on-disk layouts the real ones use.

CIFAR-10's real files have md5s pinned in torchvision.datasets.CIFAR10, which no fake can match;
trust_fake_cifar10 swaps that table for the fakes' md5s (the check itself stays live).
"""

import hashlib
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# A pixel whose value pins down the decoding: image 0 of data_batch_1, row 3, column 5, RGB.
CIFAR_KNOWN_PIXEL = (3, 5, (11, 22, 33))


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings, as the real files (cPickle under Python 2) do,
    so encoding="latin1" (torchvision) sees 'data' and encoding="bytes" sees b'data', as with the real files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = _save_py2str


def _dump(obj, path):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_fake_cifar10(root, n_train=50, n_test=20, seed=0) -> dict:
    """Write root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}.

    Returns what was written: x_train/x_test (N,3,32,32 uint8 numpy), y_train/y_test, classes, md5 {file name: md5}.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    flat = {s: rng.integers(0, 256, (n, 3072), dtype=np.uint8) for s, n in (("train", n_train), ("test", n_test))}
    labels = {s: rng.integers(0, 10, n).tolist() for s, n in (("train", n_train), ("test", n_test))}
    r, c, rgb = CIFAR_KNOWN_PIXEL
    for ch in range(3):  # row-major, channel-first: 1024 red values, then green, then blue
        flat["train"][0, ch * 1024 + r * 32 + c] = rgb[ch]
    batches = [(f"data_batch_{b + 1}", f"training batch {b + 1} of 5", idx, "train")
               for b, idx in enumerate(np.array_split(np.arange(n_train), 5))]
    batches.append(("test_batch", "testing batch 1 of 1", np.arange(n_test), "test"))
    for name, batch_label, idx, split in batches:
        _dump({"batch_label": batch_label,
               "labels": [labels[split][i] for i in idx],
               "data": flat[split][idx],
               "filenames": [f"fake_{CIFAR10_LABEL_NAMES[labels[split][i]]}_s_{i:06d}.png" for i in idx]},
              folder / name)
    _dump({"num_cases_per_batch": max(len(b[2]) for b in batches[:5]), "label_names": CIFAR10_LABEL_NAMES,
           "num_vis": 3072}, folder / "batches.meta")
    return {
        "x_train": flat["train"].reshape(-1, 3, 32, 32), "y_train": np.array(labels["train"]),
        "x_test": flat["test"].reshape(-1, 3, 32, 32), "y_test": np.array(labels["test"]),
        "classes": list(CIFAR10_LABEL_NAMES),
        "md5": {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()},
    }


def trust_fake_cifar10(monkeypatch, md5):
    """Point torchvision's CIFAR10 md5 table at the fake files' md5s for this test only."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5[CIFAR10.meta["filename"]]})


def tiny_colour(label):
    """The mean RGB colour of every fake Tiny ImageNet image of this class (far apart, so JPEG loss can't confuse them)."""
    return ((40 + 70 * label) % 256, (200 - 50 * label) % 256, (90 + 110 * label) % 256)


def write_fake_tinyimagenet(root, n_classes=3, n_train_per_class=4, n_val=6, seed=0) -> dict:
    """Write root/tiny-imagenet-200 with real 64x64 JPEGs whose colour is tiny_colour(class).

    wnids are written in descending order, so line order differs from sorted order.
    Returns folder, wnids (line order), val_labels (class index of val_<i>.JPEG).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{99999999 - 1111111 * c:08d}" for c in range(n_classes)]

    def jpeg(label, path):
        noise = rng.integers(-6, 7, (64, 64, 3))
        Image.fromarray(np.clip(np.array(tiny_colour(label)) + noise, 0, 255).astype(np.uint8)).save(path, "JPEG")

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tfake class {c}\n" for c, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        (folder / "train" / w / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n_train_per_class):
            jpeg(c, folder / "train" / w / "images" / f"{w}_{i}.JPEG")
        (folder / "train" / w / f"{w}_boxes.txt").write_text(
            "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(n_train_per_class)))
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    val_labels = rng.permutation(np.arange(n_val) % n_classes).tolist()
    for i, c in enumerate(val_labels):
        jpeg(c, folder / "val" / "images" / f"val_{i}.JPEG")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t63\t63\n" for i, c in enumerate(val_labels)))
    return {"folder": folder, "wnids": wnids, "val_labels": val_labels}


WORKFLOW_FILES = ("Snakefile", "config.yaml", "configs", "workflow", "envs", "profiles")


def copy_workflow(workdir, source=Path(__file__).resolve().parents[1]):
    """The workflow (Snakefile, configs, rules, schemas, envs) copied into `workdir`, to run there."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = Path(source) / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    return workdir
