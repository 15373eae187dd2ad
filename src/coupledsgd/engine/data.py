"""Datasets: a registry of sources, a once-per-experiment tensor cache, and the device-side pipeline.

Each source returns raw tensors (uint8 images or float signals) with a fixed, documented split. The
`prepare` stage decodes a source once and saves it as a tensor file; every training job loads that
file, normalises it once and keeps it on the training device. Minibatch selection and augmentation
at step `s` are pure functions of `(seed, s)` (see `seeds.step_generator`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.registry import ARRAYS, DATASETS, SYNTHETIC, Dataset


# name -> (input kind, random-crop padding, horizontal flip): the augmentation each dataset admits.


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for the draws of one step (or epoch) of one stream: a pure function of both."""
    key = f"{seed}/{step}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)


def _mnist1d() -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset generates the data from its fixed default seed; get_dataset() would try a download.
    d = make_dataset(get_dataset_args())
    as_signal = lambda a: torch.as_tensor(a, dtype=torch.float32).unsqueeze(1)
    return {
        "x_train": as_signal(d["x"]),
        "y_train": torch.as_tensor(d["y"], dtype=torch.int64),
        "x_test": as_signal(d["x_test"]),
        "y_test": torch.as_tensor(d["y_test"], dtype=torch.int64),
    }


def _digits() -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    # Fixed stratified split: 1,347 training and 450 test images, the same on every machine.
    x, y = load_digits(return_X_y=True)
    x = torch.as_tensor(x.reshape(-1, 1, 8, 8) * (255 / 16)).round().to(torch.uint8)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=450, stratify=y, random_state=0)
    y = torch.as_tensor(y, dtype=torch.int64)
    return {"x_train": x[idx_train], "y_train": y[idx_train], "x_test": x[idx_test], "y_test": y[idx_test]}


def synthetic_source(spec: Dataset, seed: int, chunk: int = 4096) -> dict:
    """A learnable task at `spec`'s shapes drawn from `seed`: example = its class's template + a nuisance
    pattern + pixel noise. Templates and nuisance are smooth (white noise at a quarter of the
    resolution, upsampled); the nuisance's scale grows as the root of the smooth dimensions, which
    keeps the classes about as far apart at every shape (a class-mean classifier: 0.9-1.0 accuracy),
    so a network has something to learn and needs many steps to learn it. Images as uint8 around 128 (like decoded images),
    signals as float32; drawn in chunks, so Tiny-ImageNet's shapes fit in memory."""
    g = step_generator(seed, -1)  # no training step is negative: a stream of its own
    channels, size = spec.shape[0], tuple(spec.shape[1:])
    low = tuple(max(1, n // 4) for n in size)
    mode = "linear" if len(size) == 1 else "bilinear"
    smooth = lambda n: F.interpolate(
        torch.randn(n, channels, *low, generator=g), size=size, mode=mode, align_corners=False
    )
    templates = smooth(spec.classes)
    templates /= templates.flatten(1).std(1).view(-1, *(1,) * len(spec.shape))
    nuisance = 0.3 * math.sqrt(channels * math.prod(low))

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for start in range(0, n, chunk):
            y = torch.randint(spec.classes, (min(chunk, n - start),), generator=g)
            x = templates[y] + nuisance * smooth(len(y)) + torch.randn(len(y), *spec.shape, generator=g)
            xs.append(x if spec.kind == "signal" else (128 + 16 * x).round().clamp(0, 255).to(torch.uint8))
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    (x_train, y_train), (x_test, y_test) = draw(spec.n_train), draw(spec.n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _arrays(path: str) -> dict:
    from ..core.arrays import read_arrays

    # Inputs keep uint8 (normalised like the built-in images) or become float32.
    as_tensor = lambda a: torch.from_numpy(a if a.dtype == np.uint8 else a.astype(np.float32))
    a = read_arrays(path)
    return {
        "x_train": as_tensor(a["x_train"]),
        "y_train": torch.from_numpy(a["y_train"].astype(np.int64)),
        "x_test": as_tensor(a["x_test"]),
        "y_test": torch.from_numpy(a["y_test"].astype(np.int64)),
    }


def read_source(name: str, root: str | None = None, download: bool = False, path: str | None = None) -> dict:
    """Raw tensors of a registered dataset, or of the arrays at `path`: x_train, y_train, x_test, y_test."""
    if name == ARRAYS:
        return _arrays(path)
    if name == "mnist1d":
        return _mnist1d()
    if name == "digits":
        return _digits()
    if root is None:
        raise ConfigError(f"data.root: dataset {name!r} needs the folder that holds it")
    from . import readers

    if name == "cifar10":
        return readers.read_cifar10(root, download=download)
    if name == "tinyimagenet":
        return readers.read_tinyimagenet(root)
    raise ConfigError(f"data.name: unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def prepare(
    name: str,
    path: str | Path,
    root: str | None = None,
    download: bool = False,
    n_train: int | None = None,
    arrays: str | None = None,
    crop_pad: int = 0,
    flip: bool = False,
    synthetic: tuple[Dataset, str, int] | None = None,
) -> dict:
    """Decode a dataset once and save the tensors (first `n_train` training examples) to `path`.

    For `name` arrays, the .npz file `arrays`, with the augmentation `crop_pad` and `flip` stored
    alongside (the registered datasets' come from the registry); for `name` synthetic, `synthetic`:
    (its shapes, the dataset it is like, the seed)."""
    if name == SYNTHETIC:
        raw = synthetic_source(synthetic[0], synthetic[2])
    elif name not in DATASETS and name != ARRAYS:
        raise ConfigError(f"data.name: unknown dataset {name!r}; known: {', '.join(DATASETS)}, {ARRAYS}, {SYNTHETIC}")
    else:
        raw = read_source(name, root, download, arrays)
    if n_train is not None:
        if n_train > len(raw["y_train"]):
            raise ConfigError(
                f"data.n_train: {n_train} exceeds the {len(raw['y_train'])} training examples of {name!r}"
            )
        raw["x_train"], raw["y_train"] = raw["x_train"][:n_train], raw["y_train"][:n_train]
    x = raw["x_train"].double()
    dims = [0] + list(range(2, x.dim()))
    # Per-channel statistics of the training split, stored with the data so every job agrees. A
    # constant channel (possible in arrays data) is only centred.
    std = x.std(dims)
    cache = {
        **{k: raw[k].contiguous() for k in ("x_train", "y_train", "x_test", "y_test")},
        "mean": x.mean(dims).float(),
        "std": torch.where(std > 0, std, 1.0).float(),
        "name": name,
        "num_classes": int(max(raw["y_train"].max(), raw["y_test"].max())) + 1,
        **({"like": synthetic[1], "num_classes": synthetic[0].classes} if synthetic else {}),
    }
    if name == ARRAYS:
        cache["augment"] = (int(crop_pad or 0), bool(flip))
    from .checkpoints import save_torch

    save_torch(cache, path)
    return cache


@dataclass
class DeviceData:
    """A prepared dataset, normalised and resident on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    crop_pad: int
    flip: bool
    # Per channel, the normalised value of a raw 0 (a black pixel): -mean / std. The random crop pads
    # with it, as padding the raw image with zeros before normalising does. None: pad with 0.
    pad_value: torch.Tensor | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def load(path: str | Path, device: str | torch.device = "cpu", augment: bool = True) -> DeviceData:
    from .checkpoints import load_torch

    cache = load_torch(path, what="prepared dataset")
    view = (1, -1) + (1,) * (cache["x_train"].dim() - 2)
    mean, std = cache["mean"].view(view).to(device), cache["std"].view(view).to(device)
    norm = lambda x: (x.to(device).float() - mean) / std
    # arrays data augments as its config states; synthetic data as the dataset it is like
    pad, flip = cache["augment"] if cache["name"] == ARRAYS else DATASETS[cache.get("like", cache["name"])][1:3]
    return DeviceData(
        norm(cache["x_train"]),
        cache["y_train"].to(device),
        norm(cache["x_test"]),
        cache["y_test"].to(device),
        cache["num_classes"],
        crop_pad=pad if augment else 0,
        flip=flip and augment,
        pad_value=(-mean / std).flatten(),
    )


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches per pass; the last partial batch of each epoch is dropped."""
    return n_train // batch_size


def epoch_permutation(order_seed: int, epoch: int, n_train: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits the training set: a pure function of (seed, epoch)."""
    return torch.randperm(n_train, generator=step_generator(order_seed, epoch))


def batch_indices(order_seed: int, step: int, n_train: int, batch_size: int) -> torch.Tensor:
    """Training-example indices of the minibatch at `step`: a pure function of (seed, step).

    Epoch e = step // steps_per_epoch visits a permutation drawn from (seed, e), so every example is
    seen once per epoch, and a run started at any step sees the batches an uninterrupted run sees.
    """
    epoch, pos = divmod(step, steps_per_epoch(n_train, batch_size))
    return epoch_permutation(order_seed, epoch, n_train)[pos * batch_size : (pos + 1) * batch_size]


@dataclass
class AugmentDraws:
    """The random draws of the augmentation at some steps: crop offsets and flip decisions."""

    shifts: torch.Tensor | None  # (..., batch, spatial dims) int64, or None without cropping
    flips: torch.Tensor | None  # (..., batch) bool, or None without flipping

    def to(self, device, non_blocking: bool = False) -> "AugmentDraws":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)
        return AugmentDraws(move(self.shifts), move(self.flips))

    def pin_memory(self) -> "AugmentDraws":
        pin = lambda t: None if t is None else t.pin_memory()
        return AugmentDraws(pin(self.shifts), pin(self.flips))

    def __getitem__(self, index) -> "AugmentDraws":
        pick = lambda t: None if t is None else t[index]
        return AugmentDraws(pick(self.shifts), pick(self.flips))


def augment_draws(aug_seed: int, steps, batch_size: int, spatial_dims: int, crop_pad: int, flip: bool) -> AugmentDraws:
    """The draws of `steps` (stacked along a leading dimension), each from (seed, step) on the CPU,
    so they are identical on every device and however many steps are drawn at once."""
    shifts, flips = [], []
    for step in steps:
        g = step_generator(aug_seed, step)
        if crop_pad:
            shifts.append(torch.randint(0, 2 * crop_pad + 1, (batch_size, spatial_dims), generator=g))
        if flip:
            flips.append(torch.rand(batch_size, generator=g).lt(0.5))
    return AugmentDraws(torch.stack(shifts) if shifts else None, torch.stack(flips) if flips else None)


def pad_border(x: torch.Tensor, pad: int, value: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, *spatial) padded by `pad` on every side of each spatial dimension with value[c] in
    channel c (0 where value is None); the interior is x itself, bit for bit."""
    if value is None:
        return F.pad(x, (pad,) * 2 * (x.dim() - 2))
    shape = (x.shape[0], x.shape[1], *(n + 2 * pad for n in x.shape[2:]))
    out = value.to(x.dtype).view(1, -1, *(1,) * (x.dim() - 2)).expand(shape).clone()
    out[(slice(None), slice(None), *(slice(pad, pad + n) for n in x.shape[2:]))] = x
    return out


def apply_augment(
    x: torch.Tensor, draws: AugmentDraws, crop_pad: int, pad_value: torch.Tensor | None = None
) -> torch.Tensor:
    """Random crop and horizontal flip, on the whole batch, from draws (`augment_draws`) already on x's
    device: nothing here waits for the host. The crop pads each channel with pad_value (DeviceData's:
    a black pixel, as the standard recipe pads the raw image with zeros), 0 where it is None."""
    if draws.shifts is None and draws.flips is None:
        return x
    b = x.shape[0]
    if draws.shifts is not None:
        shifts = draws.shifts
        padded = pad_border(x, crop_pad, pad_value)
        rows = torch.arange(b, device=x.device)
        if x.dim() == 3:
            cols = shifts[:, 0, None] + torch.arange(x.shape[-1], device=x.device)
            x = padded[rows[:, None], :, cols].transpose(1, 2)
        else:
            h, w = x.shape[-2:]
            ys = shifts[:, 0, None] + torch.arange(h, device=x.device)
            xs = shifts[:, 1, None] + torch.arange(w, device=x.device)
            x = padded[rows[:, None, None], :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)
    if draws.flips is not None:
        mask = draws.flips.view(-1, *(1,) * (x.dim() - 1))
        x = torch.where(mask, x.flip(-1), x)
    return x.contiguous()


def augment(
    x: torch.Tensor, aug_seed: int, step: int, crop_pad: int, flip: bool, pad_value: torch.Tensor | None = None
) -> torch.Tensor:
    """The augmentation of one step's batch (`augment_draws` and `apply_augment` together)."""
    if not crop_pad and not flip:
        return x
    draws = augment_draws(aug_seed, [step], x.shape[0], x.dim() - 2, crop_pad, flip)[0]
    return apply_augment(x, draws.to(x.device), crop_pad, pad_value)


class MemberBatches:
    """The minibatches of k runs, step by step, without waiting for the host inside an epoch.

    The permutations and augmentation draws of an epoch are made on the host once, for every run, and
    copied to the device in one go (from pinned memory, asynchronously, on CUDA); a step then only
    indexes device tensors. The values are those of `batch_indices` and `augment` step by step.
    Returns x as (k, B, *input shape) and y as (k, B).
    """

    def __init__(self, data: DeviceData, order_seeds: list[int], aug_seeds: list[int], batch_size: int):
        self.data, self.order_seeds, self.aug_seeds, self.batch_size = data, order_seeds, aug_seeds, batch_size
        self.spe = steps_per_epoch(data.n_train, batch_size)
        self.epoch: int | None = None

    def _load(self, epoch: int) -> None:
        d, b, device = self.data, self.batch_size, self.data.x_train.device
        cuda = device.type == "cuda"
        perms = torch.stack([epoch_permutation(s, epoch, d.n_train) for s in self.order_seeds])
        steps = range(epoch * self.spe, (epoch + 1) * self.spe)
        draws = [augment_draws(s, steps, b, d.x_train.dim() - 2, d.crop_pad, d.flip) for s in self.aug_seeds]
        stack = lambda ts: None if ts[0] is None else torch.stack(ts)
        draws = AugmentDraws(stack([a.shifts for a in draws]), stack([a.flips for a in draws]))
        if cuda:
            perms, draws = perms.pin_memory(), draws.pin_memory()
        self.perms, self.draws = perms.to(device, non_blocking=cuda), draws.to(device, non_blocking=cuda)
        self.epoch = epoch

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, pos = divmod(step, self.spe)
        if epoch != self.epoch:
            self._load(epoch)
        d, b = self.data, self.batch_size
        idx = self.perms[:, pos * b : (pos + 1) * b]
        x = d.x_train[idx]
        if d.crop_pad or d.flip:
            k = len(self.order_seeds)
            draws = self.draws[:, pos]
            flat = lambda t: None if t is None else t.flatten(0, 1)
            x = apply_augment(
                x.flatten(0, 1), AugmentDraws(flat(draws.shifts), flat(draws.flips)), d.crop_pad, d.pad_value
            )
            # CPU convolutions choose their kernel by the strides, size-1 dimensions' included: one
            # member's batch keeps the strides `augment` gives it.
            x = x.unsqueeze(0) if k == 1 else x.view(k, b, *x.shape[1:])
        return x, d.y_train[idx]


def stack_channels(x: torch.Tensor) -> torch.Tensor:
    """(k, B, C, ...) member batches -> (B, k x C, ...), member i's channels the i-th block."""
    if x.shape[0] == 1:
        return x[0]
    return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
