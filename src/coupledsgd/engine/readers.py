"""Read real on-disk dataset layouts into uint8 image tensors (N, 3, H, W) and int64 labels.

Each reader returns {"x_train", "y_train", "x_test", "y_test", "classes"}; every problem with the
files on disk raises DataError naming the file or folder at fault.
"""

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from ..core.errors import DataError

TINY_SIZE = 64


def read_cifar10(root, download=False) -> dict:
    """CIFAR-10 from root/cifar-10-batches-py, loaded by torchvision.datasets.CIFAR10.

    torchvision's md5 table (CIFAR10.train_list, test_list, meta) is kept in force: we check each
    file against it first only because torchvision's own failure does not say which file is bad.
    """
    root = Path(root)
    if download:
        try:  # the test split is the cheap one to build; torchvision skips the fetch if md5s already match
            CIFAR10(root, train=False, download=True)
        except Exception as e:  # urllib, tarfile and integrity failures share no base class
            raise DataError(f"{root}: could not download CIFAR-10 ({type(e).__name__}: {e})") from e
    folder = root / CIFAR10.base_folder
    if not root.is_dir():
        raise DataError(f"{root}: CIFAR-10 root folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: CIFAR-10 folder missing (expected the extracted cifar-10-python.tar.gz)")
    for name, md5 in CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: CIFAR-10 file missing")
        if not check_integrity(str(folder / name), md5):
            raise DataError(
                f"{folder / name}: CIFAR-10 file corrupt or truncated (md5 differs from torchvision's {md5})"
            )
    out = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = CIFAR10(root, train=train, download=False)
        except Exception as e:
            raise DataError(
                f"{_unreadable_cifar_file(folder, train)}: CIFAR-10 file unreadable ({type(e).__name__}: {e})"
            ) from e
        out[f"x_{split}"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # torchvision gives NHWC
        out[f"y_{split}"] = torch.tensor(ds.targets, dtype=torch.int64)
        out["classes"] = [str(c) for c in ds.classes]
    return out


def _unreadable_cifar_file(folder, train):
    # Only reached when a file passes its md5 yet fails to load, so find it by loading each in turn.
    names = [n for n, _ in (CIFAR10.train_list if train else CIFAR10.test_list)] + [CIFAR10.meta["filename"]]
    for name in names:
        try:
            with open(folder / name, "rb") as f:
                pickle.load(f, encoding="latin1")
        except Exception:
            return folder / name
    return folder


def read_tinyimagenet(root) -> dict:
    """Tiny ImageNet from the standard tiny-imagenet-200 layout; its val split is the test set.

    root may be the tiny-imagenet-200 folder or its parent. classes are the wnids in wnids.txt order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Tiny ImageNet root folder does not exist")
    if not (root / "wnids.txt").exists() and (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    wnids_file, ann_file = root / "wnids.txt", root / "val" / "val_annotations.txt"
    if not wnids_file.is_file():
        raise DataError(
            f"{wnids_file}: Tiny ImageNet class list missing (root must be tiny-imagenet-200 or its parent)"
        )
    wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{wnids_file}: class list is empty or repeats a wnid")
    index = {w: i for i, w in enumerate(wnids)}

    train_files, train_labels = [], []
    for i, w in enumerate(wnids):
        folder = root / "train" / w / "images"
        files = sorted(folder.glob("*.JPEG"))  # sorted so the order does not depend on the file system
        if not files:
            raise DataError(f"{folder}: no .JPEG training images for class {w}")
        train_files += files
        train_labels += [i] * len(files)

    if not ann_file.is_file():
        raise DataError(f"{ann_file}: Tiny ImageNet val annotations missing")
    val_files, val_labels = [], []
    for n, line in enumerate(ann_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{ann_file}: line {n} is not 'filename<TAB>wnid<TAB>...'")
        if fields[1] not in index:
            raise DataError(f"{ann_file}: line {n} names wnid {fields[1]!r}, which is not in {wnids_file.name}")
        val_files.append(root / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])
    if not val_files:
        raise DataError(f"{ann_file}: no annotations")

    return {
        "x_train": _decode_all(train_files),
        "y_train": torch.tensor(train_labels, dtype=torch.int64),
        "x_test": _decode_all(val_files),
        "y_test": torch.tensor(val_labels, dtype=torch.int64),
        "classes": wnids,
    }


def _decode_all(files):
    x = np.empty((len(files), TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)

    def decode(i):
        path = files[i]
        try:
            with Image.open(path) as im:
                if im.size != (TINY_SIZE, TINY_SIZE):
                    raise DataError(f"{path}: image is {im.size[0]}x{im.size[1]}, expected {TINY_SIZE}x{TINY_SIZE}")
                x[i] = np.asarray(im.convert("RGB"))  # some Tiny ImageNet images are greyscale
        except FileNotFoundError as e:
            raise DataError(f"{path}: image file missing") from e
        except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "not a readable image"
            raise DataError(f"{path}: image unreadable ({e})") from e

    with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding; 110k files otherwise take minutes
        list(pool.map(decode, range(len(files))))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
