"""What the experiment core knows of each dataset and model without building them (no torch): the
config check, the cost estimate and the engine's loaders read these one tables.

Besides the registered names, a model may be any importable callable ("package.module:callable",
`is_custom_model`) and a dataset either rehearsal data (`SYNTHETIC`) or the arrays of an .npz file
(`ARRAYS`, `data.path`); `dataset` gives the facts of any of them.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple


class Dataset(NamedTuple):
    kind: str  # image | signal (| array: other shapes of arrays data): which models take it
    crop_pad: int  # augmentation: random crop after padding by this many pixels (0: none)
    flip: bool  # augmentation: random horizontal flips
    n_train: int
    n_test: int
    shape: tuple  # one example, channels first
    classes: int


DATASETS = {
    "mnist1d": Dataset("signal", 0, False, 4000, 1000, (1, 40), 10),  # generated offline by mnist1d
    "digits": Dataset(
        "image", 1, False, 1347, 450, (1, 8, 8), 10
    ),  # scikit-learn's 8x8 digits; flipped digits are other digits
    "cifar10": Dataset("image", 4, True, 50000, 10000, (3, 32, 32), 10),
    "tinyimagenet": Dataset("image", 8, True, 100000, 10000, (3, 64, 64), 200),
}


# Rehearsal data (`data.name: synthetic`): a learnable task at the shapes of the dataset it is `like`
# (its kind, augmentation and sizes), each of shape, classes, n_train and n_test overridable.
SYNTHETIC = "synthetic"


class Model(NamedTuple):
    takes: str  # the dataset kind it reads
    description: str
    channels: int | None = None  # the input channels it is built for, where it is not built for any


MODELS = {
    "cnn1d": Model("signal", "1D CNN for MNIST-1D (inputs C x L)"),
    "resnet20": Model("image", "ResNet-20, He et al. 2016, option-A shortcuts (CIFAR-10)"),
    "resnet8": Model("image", "ResNet-8, the same family with one block per stage (digits)"),
    "resnet50": Model("image", "torchvision ResNet-50 with a 3x3 stride-1 stem, no max-pool (64x64 inputs)"),
    "vit": Model(
        "image", "torchvision VisionTransformer, 8x8 patches, 6 layers, width 256 (64x64 inputs)", channels=3
    ),  # torchvision builds its patch projection for RGB images
}


ARRAYS = "arrays"  # data.name of a dataset read from data.path (core.arrays)


def is_custom_model(name: str) -> bool:
    """A model given by import path ("package.module:callable") rather than by a registry name."""
    return ":" in name


def dataset(data: dict) -> Dataset:
    """The facts of the configured dataset (the `data` section): the registry's; the synthetic one's,
    those of the dataset it is like with its stated shape, classes and sizes; or those of the arrays at
    data.path, whose augmentation is the crop and flip the section states."""
    if data["name"] == SYNTHETIC:
        like = DATASETS[data.get("like") or "cifar10"]
        given = {k: data.get(k) for k in ("n_train", "n_test", "classes")}
        shape = tuple(data["shape"]) if data.get("shape") else like.shape
        return like._replace(shape=shape, **{k: v for k, v in given.items() if v is not None})
    if data["name"] != ARRAYS:
        return DATASETS[data["name"]]
    shape, n_train, n_test, classes = _arrays_facts(data["path"], *_version(data["path"]))
    kind = {2: "signal", 3: "image"}.get(len(shape), "array")  # (C, L) signals, (C, H, W) images
    return Dataset(kind, data.get("crop_pad") or 0, bool(data.get("flip")), n_train, n_test, shape, classes)


def _version(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return 0, 0  # read_arrays says what is wrong
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _arrays_facts(path: str, mtime_ns: int, size: int) -> tuple[tuple[int, ...], int, int, int]:
    # Read and checked once per version of the file: the config check, the cost estimate and the
    # progress report each ask.
    from .arrays import read_arrays

    a = read_arrays(path)
    return tuple(a["x_train"].shape[1:]), len(a["y_train"]), len(a["y_test"]), int(a["y_train"].max()) + 1
