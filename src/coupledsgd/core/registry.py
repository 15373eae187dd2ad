"""What the experiment core knows of each dataset and model without building them (no torch): the
config check, the cost estimate and the engine's loaders read these one tables.
"""

from __future__ import annotations

from typing import NamedTuple


class Dataset(NamedTuple):
    kind: str             # image | signal: which models take it
    crop_pad: int         # augmentation: random crop after padding by this many pixels (0: none)
    flip: bool            # augmentation: random horizontal flips
    n_train: int
    n_test: int
    shape: tuple          # one example, channels first
    classes: int


DATASETS = {
    "mnist1d": Dataset("signal", 0, False, 4000, 1000, (1, 40), 10),   # generated offline by mnist1d
    "digits": Dataset("image", 1, False, 1347, 450, (1, 8, 8), 10),    # scikit-learn's 8x8 digits; flipped digits are other digits
    "cifar10": Dataset("image", 4, True, 50000, 10000, (3, 32, 32), 10),
    "tinyimagenet": Dataset("image", 8, True, 100000, 10000, (3, 64, 64), 200),
}


# Rehearsal data (`data.name: synthetic`): a learnable task at the shapes of the dataset it is `like`
# (its kind, augmentation and sizes), each of shape, classes, n_train and n_test overridable.
SYNTHETIC = "synthetic"


def dataset_of(data: dict) -> Dataset:
    """The dataset a config's `data` section describes: a registered one, or the synthetic one."""
    if data["name"] != SYNTHETIC:
        return DATASETS[data["name"]]
    like = DATASETS[data.get("like") or "cifar10"]
    given = {k: data.get(k) for k in ("n_train", "n_test", "classes")}
    shape = tuple(data["shape"]) if data.get("shape") else like.shape
    return like._replace(shape=shape, **{k: v for k, v in given.items() if v is not None})


class Model(NamedTuple):
    takes: str            # the dataset kind it reads
    description: str


MODELS = {
    "cnn1d": Model("signal", "1D CNN for MNIST-1D (inputs C x L)"),
    "resnet20": Model("image", "ResNet-20, He et al. 2016, option-A shortcuts (CIFAR-10)"),
    "resnet8": Model("image", "ResNet-8, the same family with one block per stage (digits)"),
    "resnet50": Model("image", "torchvision ResNet-50 with a 3x3 stride-1 stem, no max-pool (64x64 inputs)"),
    "vit": Model("image", "torchvision VisionTransformer, 8x8 patches, 6 layers, width 256 (64x64 inputs)"),
}
