"""k members as one network, with each member's parameters, buffers and momentum readable as solo tensors.

Every training job trains a set of k >= 1 runs that share model, hparams and step range. For k = 1
the network is the run's own model. For k > 1 it is one network of the same architecture in which
member i owns the i-th block of k of every channel dimension:

- cnn1d, resnet8/20: the registry's own classes built with `k` (grouped convolutions, BatchNorm over
  k x C channels, a batched linear head, option-A shortcuts padded per member);
- resnet50: `GroupedResNet50`, torchvision's ResNet-50 (3x3 stem) with the same parameter names;
- vit: `StackedViT`, torchvision's VisionTransformer with each member's weights stacked and applied
  by batched matrix products, attention over the k x B sequences;
- any model given by import path: `Vmapped`, the members' stacked parameters and buffers under
  `torch.func.vmap` (`functional_call` with each member's own buffers, which BatchNorm updates in
  place, so each member's running statistics move as in its solo run).

Inputs are channel-stacked, (B, k x C, ...), with member i's minibatch the i-th block; outputs are
(B, k x classes). Every network tensor T of a solo tensor of shape s satisfies
`T.view(k, *s)[i] == member i's tensor`, except the BatchNorm step counters (`num_batches_tracked`),
which the grouped networks keep once for all members and `Members` offsets per member.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from .models import VIT, VIT_EPS, CNN1d, CifarResNet, Head


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (expansion 4, stride on the 3x3), for k members."""

    def __init__(self, c_in: int, planes: int, stride: int, k: int):
        super().__init__()
        out = 4 * planes
        conv = lambda a, b, size, s=1: nn.Conv2d(k * a, k * b, size, stride=s, padding=size // 2, bias=False, groups=k)
        self.conv1, self.bn1 = conv(c_in, planes, 1), nn.BatchNorm2d(k * planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, stride), nn.BatchNorm2d(k * planes)
        self.conv3, self.bn3 = conv(planes, out, 1), nn.BatchNorm2d(k * out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(conv(c_in, out, 1, stride), nn.BatchNorm2d(k * out)) if stride != 1 or c_in != out else None
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class GroupedResNet50(nn.Module):
    """The registry's resnet50 (torchvision ResNet-50, 3x3 stride-1 stem, no max-pool) for k members."""

    def __init__(self, in_channels: int, num_classes: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv2d(k * in_channels, k * 64, 3, stride=1, padding=1, bias=False, groups=k)
        self.bn1 = nn.BatchNorm2d(k * 64)
        self.relu = nn.ReLU(inplace=True)
        c = 64
        for i, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(c, planes, stride if b == 0 else 1, k))
                c = 4 * planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = Head(c, num_classes, k)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Linears(nn.Module):
    """k linear layers: weight (k, out, in) (member i's nn.Linear weight is weight[i]), bias (k, out).
    Input (k, ..., in), member i's rows the i-th; output (k, ..., out)."""

    def __init__(self, k: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))

    def forward(self, x):
        k = x.shape[0]
        out = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(k, -1, x.shape[-1]), self.weight.transpose(1, 2))
        return out.view(*x.shape[:-1], -1)


class LayerNorms(nn.Module):
    """k LayerNorms over the last dimension, each with its member's affine parameters (k, d)."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.empty(k, d)), nn.Parameter(torch.empty(k, d))

    def forward(self, x):
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return torch.addcmul(self.bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=VIT_EPS), self.weight.view(shape))


class Attention(nn.Module):
    """nn.MultiheadAttention's self-attention (batch first, no dropout) for k members: the k x B
    sequences go through one scaled_dot_product_attention, so members never attend across."""

    def __init__(self, k: int, d: int, heads: int):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(k, 3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(k, 3 * d))
        self.out_proj = Linears(k, d, d)
        self.heads = heads

    def forward(self, x):  # x: (k, B, L, d)
        k, b, n, d = x.shape
        qkv = torch.baddbmm(self.in_proj_bias.unsqueeze(1), x.reshape(k, b * n, d), self.in_proj_weight.transpose(1, 2))
        q, key, value = qkv.view(k * b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, key, value)  # (k x B, heads, L, d / heads)
        return self.out_proj(out.transpose(1, 2).reshape(k, b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, k: int, d: int, heads: int, mlp: int):
        super().__init__()
        self.ln_1, self.self_attention = LayerNorms(k, d), Attention(k, d, heads)
        self.ln_2 = LayerNorms(k, d)
        self.mlp = nn.ModuleDict({"0": Linears(k, d, mlp), "3": Linears(k, mlp, d)})  # torchvision's indices

    def forward(self, x):
        x = self.self_attention(self.ln_1(x)) + x
        return x + self.mlp["3"](F.gelu(self.mlp["0"](self.ln_2(x))))


class Encoder(nn.Module):
    def __init__(self, k: int, tokens: int, d: int, layers: int, heads: int, mlp: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(k, tokens, d))
        self.layers = nn.ModuleDict({f"encoder_layer_{i}": EncoderBlock(k, d, heads, mlp) for i in range(layers)})
        self.ln = LayerNorms(k, d)

    def forward(self, x):  # x: (k, B, L, d)
        x = x + self.pos_embedding.unsqueeze(1)
        for layer in self.layers.values():
            x = layer(x)
        return self.ln(x)


class StackedViT(nn.Module):
    """The registry's vit (torchvision VisionTransformer, `models.VIT`) for k members, without vmap:
    the same parameter names, each tensor the members' solo tensors stacked (k, ...), the patch
    projection as a batched matrix product over the members' flattened patches."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, k: int):
        super().__init__()
        d, p = VIT["hidden_dim"], VIT["patch_size"]
        self.k, self.patch, tokens = k, p, (image_size // p) ** 2 + 1
        self.class_token = nn.Parameter(torch.empty(k, 1, d))
        self.conv_proj = Linears(k, in_channels * p * p, d)
        self.encoder = Encoder(k, tokens, d, VIT["num_layers"], VIT["num_heads"], VIT["mlp_dim"])
        self.heads = nn.ModuleDict({"head": Linears(k, d, num_classes)})

    def forward(self, x):  # x: (B, k x C, H, W)
        b, k, p = x.shape[0], self.k, self.patch
        nh, nw = x.shape[2] // p, x.shape[3] // p
        # Member i's patches in torchvision's token order (row-major) and weight order (C, p, p).
        patches = x.reshape(b, k, -1, nh, p, nw, p).permute(1, 0, 3, 5, 2, 4, 6).reshape(k, b * nh * nw, -1)
        tokens = self.conv_proj(patches).view(k, b, nh * nw, -1)
        x = torch.cat([self.class_token.unsqueeze(1).expand(k, b, 1, -1), tokens], dim=2)
        out = self.heads["head"](self.encoder(x)[:, :, 0])  # (k, B, classes)
        return out.transpose(0, 1).reshape(b, -1)


class Vmapped(nn.Module):
    """k copies of any model: stacked parameters and buffers (k, *solo shape), `vmap` over the members.

    Its tensors are named by the solo names (`tensors()`); registration order is the solo order.
    """

    def __init__(self, solo: nn.Module, k: int):
        super().__init__()
        self.k = k
        self.names = [n for n, _ in solo.named_parameters()]
        self.buffer_names = [n for n, _ in solo.named_buffers()]
        self.stacked = nn.ParameterList(
            [nn.Parameter(p.detach().expand(k, *p.shape).clone()) for _, p in solo.named_parameters()]
        )
        for i, (_, b) in enumerate(solo.named_buffers()):
            self.register_buffer(f"b{i}", b.expand(k, *b.shape).clone())
        self.base = [copy.deepcopy(solo).to("meta")]  # a list: not a submodule

    def tensors(self) -> dict[str, torch.Tensor]:
        out = dict(zip(self.names, self.stacked))
        out.update({n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)})
        return out

    def forward(self, x):
        from torch.func import functional_call, vmap

        b, k = x.shape[0], self.k
        xs = x.view(b, k, -1, *x.shape[2:]).transpose(0, 1)
        base = self.base[0].train(self.training)
        params = dict(zip(self.names, self.stacked))
        buffers = {n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)}
        out = vmap(lambda p, q, xi: functional_call(base, (p, q), (xi,)), randomness="different")(params, buffers, xs)
        return out.transpose(0, 1).reshape(b, -1)


def member_network(name: str, in_shape: tuple[int, ...], num_classes: int, k: int, solo: nn.Module) -> nn.Module:
    """An uninitialised network for k members of model `name` on the meta device (`solo` is any
    member's model, for the architectures that are not written for k members)."""
    c = in_shape[0]
    with torch.device("meta"):
        if name == "cnn1d":
            return CNN1d(c, in_shape[1], num_classes, k)
        if name in ("resnet20", "resnet8"):
            return CifarResNet(c, num_classes, blocks_per_stage=3 if name == "resnet20" else 1, k=k)
        if name == "resnet50":
            return GroupedResNet50(c, num_classes, k)
        if name == "vit":
            return StackedViT(c, in_shape[-1], num_classes, k)
    return Vmapped(copy.deepcopy(solo).to("meta"), k)


def named_tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    """The network's parameters and buffers by their solo names, in the solo order."""
    if isinstance(net, Vmapped):
        return net.tensors()
    return {**dict(net.named_parameters()), **dict(net.named_buffers())}


def is_counter(name: str) -> bool:
    return name.endswith("num_batches_tracked")


def stack_members(net: nn.Module, solos: list[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Copy the members' solo tensors into `net`; returns the start values of step counters kept
    once for all members (for `unstack_member`)."""
    k, shared = len(solos), {}
    with torch.no_grad():
        for name, t in named_tensors(net).items():
            values = [s[name] for s in solos]
            if is_counter(name) and t.numel() == 1 and k > 1:
                shared[name] = [v.clone() for v in values]
                t.copy_(values[0].view_as(t))
            else:
                t.copy_(torch.stack(values).view_as(t))
    return shared


def unstack_member(
    net: nn.Module, i: int, k: int, solo: dict[str, torch.Tensor], shared: dict[str, list[torch.Tensor]]
) -> None:
    """Copy member i's tensors from `net` into its solo tensors `solo` (name -> tensor)."""
    tensors = named_tensors(net)
    with torch.no_grad():
        for name, t in solo.items():
            src = tensors[name]
            if name in shared:
                start = shared[name]
                t.copy_(start[i] + (src.view_as(start[0]) - start[0]))
            else:
                t.copy_(src.view(k, *t.shape)[i])
