"""Model registry: every model is built from a name, the input shape and the number of classes.

Models are always built on the CPU under a forked RNG seeded with the run's `init` seed, so that a
given seed gives the same initial weights on every device and no global random state leaks between
runs. How re-initialisation groups a model's parameters is `units`.

The convolutional models are written for `k` members at once (see `members`): member i owns the
i-th block of k in every channel dimension (grouped convolutions, BatchNorm over k x C channels, a
batched linear head), so k networks train as one. With k = 1 they are the ordinary models, with
the same parameters, initialisation and arithmetic.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys

import torch
from torch import nn
import torch.nn.functional as F

from ..core.errors import ConfigError, described
from ..core.registry import MODELS, is_custom_model


def _conv_bn(conv: nn.Module, channels: int, dims: int) -> list[nn.Module]:
    bn = nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    return [conv, bn, nn.ReLU(inplace=True)]


class Head(nn.Linear):
    """k linear classifiers as one: weight (k * out, in), member i's rows the i-th block.

    Input (B, k * in) with member i's features the i-th block; output (B, k * out). With k = 1 this
    is nn.Linear, parameters, initialisation and arithmetic alike.
    """

    def __init__(self, in_features: int, out_features: int, k: int = 1):
        super().__init__(in_features, k * out_features)
        self.k = k

    def forward(self, x):
        if self.k == 1:
            return F.linear(x, self.weight, self.bias)
        k, b = self.k, x.shape[0]
        w = self.weight.view(k, -1, self.in_features)
        out = torch.baddbmm(self.bias.view(k, 1, -1), x.view(b, k, -1).transpose(0, 1), w.transpose(1, 2))
        return out.transpose(0, 1).reshape(b, -1)


class CNN1d(nn.Module):
    """The small 1D CNN measured on MNIST-1D: conv 32 (k5), then 32, 64, 64 (k3, stride 2)."""

    def __init__(self, in_channels: int, length: int, num_classes: int, k: int = 1):
        super().__init__()
        layers, c, n = [], in_channels, length
        for out, size, stride in [(32, 5, 1), (32, 3, 2), (64, 3, 2), (64, 3, 2)]:
            conv = nn.Conv1d(k * c, k * out, size, stride=stride, padding=size // 2, bias=False, groups=k)
            layers += _conv_bn(conv, k * out, dims=1)
            c, n = out, (n + 2 * (size // 2) - size) // stride + 1
        self.features = nn.Sequential(*layers)
        self.classifier = Head(c * n, num_classes, k)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """He et al. (2016) CIFAR block with the parameter-free option-A shortcut (subsample, zero-pad)."""

    def __init__(self, c_in: int, c_out: int, stride: int, k: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(k * c_in, k * c_out, 3, stride=stride, padding=1, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * c_out)
        self.conv2 = nn.Conv2d(k * c_out, k * c_out, 3, padding=1, bias=False, groups=k)
        self.bn2 = nn.BatchNorm2d(k * c_out)
        self.stride, self.pad, self.k, self.c_in = stride, c_out - c_in, k, c_in

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            # Zero channels around each member's own block, not around the k blocks together.
            b, _, h, w = shortcut.shape
            shortcut = F.pad(
                shortcut.reshape(b, self.k, self.c_in, h, w), (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)
            ).reshape(b, -1, h, w)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. (2016), section 4.2: 16/32/64 channels, n blocks per stage."""

    def __init__(self, in_channels: int, num_classes: int, blocks_per_stage: int, width: int = 16, k: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(k * in_channels, k * width, 3, padding=1, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * width)
        blocks, c = [], width
        for stage in range(3):
            out = width * 2**stage
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(c, out, stride=2 if stage > 0 and i == 0 else 1, k=k))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = Head(c, num_classes, k)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _resnet50(in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    # 64x64 inputs: a 3x3 stride-1 stem without max-pooling keeps an 8x8 map before the last stage,
    # the usual Tiny-ImageNet adaptation.
    model = resnet50(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    # initialised as torchvision initialises every other convolution of the network (its loop ran
    # before this stem existed; PyTorch's default would give it about twice their spread)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


# A ViT sized for 64x64 inputs: 8x8 patches give 64 tokens (members.StackedViT reads the same sizes).
VIT = {"patch_size": 8, "num_layers": 6, "num_heads": 8, "hidden_dim": 256, "mlp_dim": 512}
VIT_EPS = 1e-6  # torchvision's LayerNorm epsilon for the ViT


def _vit(image_size: int, num_classes: int) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=image_size, num_classes=num_classes, **VIT)
    model.pre_norm = True  # its LayerNorms normalise the input of the layer after them
    return model


def _build(name: str, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c = in_shape[0]
    if name == "cnn1d":
        return CNN1d(c, in_shape[1], num_classes)
    if name == "resnet20":
        return CifarResNet(c, num_classes, blocks_per_stage=3)
    if name == "resnet8":
        return CifarResNet(c, num_classes, blocks_per_stage=1)
    if name == "resnet50":
        return _resnet50(c, num_classes)
    if name == "vit":
        return _vit(in_shape[-1], num_classes)
    raise ConfigError(f"model.name: unknown model {name!r}; known: {', '.join(MODELS)}")


def build_model(
    name: str, in_shape: tuple[int, ...], num_classes: int, seed: int, kwargs: dict | None = None
) -> nn.Module:
    """A freshly initialised model on the CPU; the same seed gives the same weights.

    `name` is a registry name, or "package.module:callable" for a model of the user's own (`custom_model`)."""
    if not is_custom_model(name) and name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; known: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_custom_model(name):
            return custom_model(name, tuple(in_shape), num_classes, kwargs or {})
        return _build(name, tuple(in_shape), num_classes)


@contextlib.contextmanager
def _working_directory_importable():
    # The working directory (where the workflow runs, and its jobs) on the module search path while a
    # model of the user's own is imported and built, as `python -m` would have it.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def takes_shape(make) -> bool:
    """The call convention of a callable given by import path: `make(in_shape, num_classes, **kwargs)`
    where its second positional parameter is `num_classes` or it has two positional parameters and none
    named `num_classes`; otherwise `make(num_classes=..., **kwargs)`, the convention of library
    constructors (torchvision.models.resnet18, whose parameters are keyword-only)."""
    try:
        params = inspect.signature(make).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): the workflow's own convention
        return True
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if "num_classes" in params:
        return positional[1:2] == ["num_classes"]
    return len(positional) >= 2


def call_text(name: str, in_shape: tuple[int, ...], num_classes: int, kwargs: dict, shape: bool | None = None) -> str:
    """The call the workflow makes, as the user would write it."""
    if shape is None:
        shape = takes_shape(_callable(name))
    given = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return f"{name}({tuple(in_shape)}, {num_classes}{given})" if shape else f"{name}(num_classes={num_classes}{given})"


def _callable(name: str):
    module_name, attr = name.split(":", 1)
    with _working_directory_importable():
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # the module's own error, whatever it raises while importing
            raise ConfigError(f"model.name: cannot import {module_name!r}: {described(e)}") from None
    make = getattr(module, attr, None)
    if not callable(make):
        raise ConfigError(f"model.name: module {module_name!r} has no callable {attr!r}")
    return make


def custom_model(name: str, in_shape: tuple[int, ...], num_classes: int, kwargs: dict) -> nn.Module:
    """The model of `name` "package.module:callable", called as `takes_shape` detects: with the input
    shape and the number of classes, or with `num_classes=` alone (a library constructor); every way
    this fails is a one-line ConfigError naming model.name."""
    make = _callable(name)
    shape = takes_shape(make)
    call = call_text(name, in_shape, num_classes, kwargs, shape)
    if "num_classes" in kwargs:
        raise ConfigError(f"model.kwargs: num_classes is the data's ({num_classes}); leave it out")
    with _working_directory_importable():
        try:
            model = make(in_shape, num_classes, **kwargs) if shape else make(num_classes=num_classes, **kwargs)
        except Exception as e:
            raise ConfigError(f"model.name: {call} failed: {described(e)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name: {call} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
