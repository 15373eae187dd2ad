"""Model registry: every model is built from a name, the input shape and the number of classes.

Models are always built on the CPU under a forked RNG seeded with the run's `init` seed, so that a
given seed gives the same initial weights on every device and no global random state leaks between
runs. `parameter_units` lists the parameters in forward order, grouped the way re-initialisation
picks them (a weight with its bias and the affine parameters of the normalisation that follows).

The convolutional models are written for `k` members at once (see `members`): member i owns the
i-th block of k in every channel dimension (grouped convolutions, BatchNorm over k x C channels, a
batched linear head), so k networks train as one. With k = 1 they are the ordinary models, with
the same parameters, initialisation and arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.registry import MODELS


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
            shortcut = F.pad(shortcut.reshape(b, self.k, self.c_in, h, w),
                             (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)).reshape(b, -1, h, w)
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


def _vit(image_size: int, num_classes: int) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    # A ViT sized for 64x64 inputs: 8x8 patches give 64 tokens.
    return VisionTransformer(image_size=image_size, patch_size=8, num_layers=6, num_heads=8,
                             hidden_dim=256, mlp_dim=512, num_classes=num_classes)


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


def build_model(name: str, in_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised model on the CPU; the same seed gives the same weights."""
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; known: {', '.join(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(name, tuple(in_shape), num_classes)


# A normalisation joins the unit whose channels it normalises: BatchNorm (and GroupNorm) after a
# convolution normalise that layer's output, the ViT's LayerNorms (pre-norm: ln_1 before the attention,
# ln_2 before the MLP, the final norm before the head) the input of the layer after them.
OUTPUT_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)
INPUT_NORMS = (nn.LayerNorm,)


def parameter_units(model: nn.Module) -> list[list[str]]:
    """Module names in forward order, grouped into re-initialisation units.

    A unit is a module that owns parameters (a convolution, a linear layer, an attention block, an
    embedding) with the normalisation layers of its channels: an output norm (OUTPUT_NORMS) joins the
    unit before it, an input norm (INPUT_NORMS) the unit after it, ahead of the layer. Registration
    order is forward order for every model in the registry.
    """
    units: list[list[str]] = []
    pending: list[str] = []  # input norms waiting for their layer
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, INPUT_NORMS):
            pending.append(name)
        elif isinstance(module, OUTPUT_NORMS) and units:
            units[-1].append(name)
        else:
            units.append(pending + [name])
            pending = []
    if pending and units:  # a norm after the last layer: it can only go with that layer
        units[-1].extend(pending)
    elif pending:
        units.append(pending)
    return units


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
