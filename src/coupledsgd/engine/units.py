"""Re-initialisation units: a model's parameters in the order data flows through them, grouped the way
re-initialisation takes them, and how each unit splits into output channels (docs/design.md,
"Conditions").

An *entry* is what one unit is made of: a layer of torch.nn (a module name: all its own parameters
and buffers), one layer of a recurrent module (`"rnn.l1"`: both directions' weights and biases of
that layer), or one parameter owned directly by any other module (`"class_token"`,
`"encoder.pos_embedding"`: the tensor's qualified name). A unit is a list of entries: a layer with
the normalisation that belongs to it.

The registry's models are walked in registration order, which is their forward order. A model given
by import path is traced: one forward pass on an example batch, with every torch function call
recording the parameters it receives (`_FirstUse`), so a module called functionally (the output
projection of nn.MultiheadAttention) or a parameter used in an expression (a position embedding)
sits where the data meets it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.errors import ConfigError

# How an entry's tensors split into output channels: (number of channels, {qualified tensor name:
# (dim, rows)}) where rows(a, b) are the indices along `dim` that hold channels a..b-1. Tensors without
# a channel axis (BatchNorm's num_batches_tracked) are absent and only re-drawn with their whole unit;
# one channel means the entry cannot be split.
Channels = tuple[int, dict[str, tuple[int, Callable[[int, int], torch.Tensor]]]]

_RMS = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
# A normalisation joins the unit whose channels it normalises: BatchNorm, GroupNorm, InstanceNorm and
# a post-norm LayerNorm after a layer normalise that layer's output. In a pre-norm network (a LayerNorm
# before the attention and before the MLP) it normalises the input of the layer after it (`input_norms`).
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, *_RMS)
INPUT_NORMS = (nn.LayerNorm, *_RMS)
# torch.nn layers that are one entry each (their own parameters re-drawn together); recurrent modules
# are one entry per layer; any other module's own parameters are one entry each.
LAYERS = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.MultiheadAttention,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.PReLU,
    nn.RNNCellBase,
    *NORMS,
)
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _rows(a: int, b: int) -> torch.Tensor:
    return torch.arange(a, b)


def _gate_rows(hidden: int, gates: int) -> Callable[[int, int], torch.Tensor]:
    # hidden unit j of a recurrent layer is row j of every gate's block (torch stacks the gates' rows)
    return lambda a, b: torch.cat([_rows(a, b) + g * hidden for g in range(gates)])


# Library blocks that are pre-norm by construction (module, class): torchvision's ViT encoder block.
PRE_NORM_BLOCKS = {("torchvision.models.vision_transformer", "EncoderBlock")}


def is_pre_norm(model: nn.Module) -> bool:
    """A model that says it is pre-norm (`pre_norm = True`), or holds a torch.nn transformer layer
    built with `norm_first=True` or a library block that is pre-norm (`PRE_NORM_BLOCKS`)."""
    return bool(getattr(model, "pre_norm", False)) or any(
        getattr(m, "norm_first", False)
        if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
        else (type(m).__module__, type(m).__name__) in PRE_NORM_BLOCKS
        for m in model.modules()
    )


def input_norms(model: nn.Module) -> set[str]:
    """The names of the normalisation layers that normalise the input of the layer after them."""
    if not is_pre_norm(model):
        return set()
    return {name for name, m in model.named_modules() if isinstance(m, INPUT_NORMS)}


def parameter_owners(model: nn.Module) -> list[str]:
    """The names of the modules that own parameters themselves, in registration order."""
    return [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _own(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {
        _join(prefix, n): t for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    }


def entries(model: nn.Module, by_module: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Every entry of `model` with its tensors (qualified name -> tensor), in registration order.

    by_module: every parameter-owning module is one entry (the registry's models, walked as always)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, m in model.named_modules():
        own = _own(m, name)
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if by_module or isinstance(m, LAYERS):
            out[name] = own
        elif isinstance(m, nn.RNNBase):
            for layer in range(m.num_layers):
                out[_join(name, f"l{layer}")] = {
                    k: t for k, t in own.items() if k.removesuffix("_reverse").endswith(f"_l{layer}")
                }
        else:
            for p, t in m.named_parameters(recurse=False):
                out[_join(name, p)] = {_join(name, p): t}
    return out


def owner(modules: dict[str, nn.Module], entry: str) -> nn.Module | None:
    """The module an entry belongs to (None for one parameter of a module that is not a layer)."""
    if entry in modules:
        return modules[entry]
    parent = modules.get(entry.rsplit(".", 1)[0] if "." in entry else "")
    return parent if isinstance(parent, nn.RNNBase) else None


def entry_channels(module: nn.Module | None, tensors: dict[str, torch.Tensor]) -> Channels:
    """The output channels of one entry: filters of a convolution, rows of a linear layer, hidden units
    of a recurrent layer (across its gates and both directions), features of a normalisation, an
    embedding or a parameter of its own (class token, position embedding: the last dimension)."""
    shaped = {n: t for n, t in tensors.items() if t.dim() > 0}
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.groups != 1:
            return 1, {}  # (in, out / groups, ...): a group's output channels are not a block of rows
        return module.out_channels, {n: (1 if n.endswith("weight") else 0, _rows) for n in shaped}
    if isinstance(module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)):
        return module.weight.shape[0], dict.fromkeys(shaped, (0, _rows))
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        if getattr(module, "proj_size", 0):
            return 1, {}  # an LSTM's projection mixes the hidden units
        gates = (
            GATES[module.mode] if isinstance(module, nn.RNNBase) else module.weight_ih.shape[0] // module.hidden_size
        )
        rows = _gate_rows(module.hidden_size, gates)
        return module.hidden_size, dict.fromkeys(shaped, (0, rows))
    if isinstance(module, nn.MultiheadAttention):
        # Channel j is feature j of the query, key and value together (rows j, D + j, 2D + j of the
        # fused projection), not row j of it: a split of the fused rows would re-draw every query before
        # any key or value, i.e. change what each head attends to without changing what it reads out.
        # Heads are contiguous blocks of D / heads features, so the leading channels re-draw one head
        # (its queries, keys and values) completely before the next.
        d = module.embed_dim
        qkv = lambda a, b: torch.cat([_rows(a, b) + i * d for i in range(3)])
        out = {}
        for n, t in shaped.items():
            short = n.rsplit(".", 1)[-1]
            if short.startswith("in_proj"):
                out[n] = (0, qkv)
            elif short in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                out[n] = (0, _rows)
            else:  # bias_k, bias_v: (1, 1, D)
                out[n] = (t.dim() - 1, _rows)
        return d, out
    # Normalisations, embeddings, parameters of their own: one feature per index of the last dimension.
    sizes = {t.shape[-1] for t in shaped.values()}
    if len(sizes) != 1:
        return 1, {}
    return sizes.pop(), {n: (t.dim() - 1, _rows) for n, t in shaped.items()}


def unit_channels(
    modules: dict[str, nn.Module],
    found: dict[str, dict[str, torch.Tensor]],
    unit: list[str],
    inputs: set[str] = frozenset(),
) -> Channels | None:
    """The channels of a unit, or None where its entries disagree on the channel count or one cannot be
    split (then the unit is only ever re-drawn whole). A norm of the unit's input (`inputs`) normalises
    features that are not its channels: it is re-drawn with the whole unit only."""
    parts = [entry_channels(owner(modules, e), found[e]) for e in unit if e not in inputs]
    counts = {n for n, _ in parts}
    if len(counts) != 1 or 1 in counts:
        return None
    return counts.pop(), {n: rows for _, tensors in parts for n, rows in tensors.items()}


class _FirstUse(TorchFunctionMode):
    """Records the entries whose parameters a torch function receives, in the order first received.
    A call's own inner calls are not seen (the mode is off inside them): nn.MultiheadAttention's
    functional forward receives its input projection before its output projection."""

    def __init__(self, entry_of: dict[int, str]):
        super().__init__()
        self.entry_of, self.order = entry_of, {}

    def _see(self, value) -> None:
        if isinstance(value, torch.Tensor):
            e = self.entry_of.get(id(value))
            if e is not None:
                self.order.setdefault(e)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._see(v)
        elif isinstance(value, dict):
            for v in value.values():
                self._see(v)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self._see(args)
        self._see(kwargs or {})
        return func(*args, **(kwargs or {}))


def traced_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The model's entries in the order one training-mode forward pass on `example` first uses their
    parameters (on a copy, under a forked generator: nothing of the model or the process changes).
    Raises a ConfigError naming a parameter that the forward pass never uses."""
    model = copy.deepcopy(model).train()
    found = entries(model)
    entry_of: dict[int, str] = {}
    for e, tensors in found.items():
        for name, t in tensors.items():
            if isinstance(t, nn.Parameter) and entry_of.setdefault(id(t), e) != e:
                raise ConfigError(
                    f"model.name: re-initialisation takes each parameter with one layer, but {name!r} is "
                    f"also a parameter of {entry_of[id(t)]!r} (tied weights); give the model a method "
                    "reinit_units() naming each parameter once"
                )
    mode = _FirstUse(entry_of)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), mode:
        model(example)
    unused = [e for e in found if e not in mode.order]
    if unused:
        raise ConfigError(
            f"model.name: re-initialisation cannot place {unused[0]!r} in forward order (it owns "
            "parameters that the forward pass never uses); give the model a method reinit_units() "
            "returning its entries in forward order, grouped into units"
        )
    return list(mode.order)


def example_batch(model: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The batch a model is traced on: 4 fixed random inputs (BatchNorm needs more than one) of the
    model's dtype, on its device."""
    like = next(model.parameters())
    x = torch.randn(4, *in_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x.to(like.device, like.dtype)


def parameter_units(model: nn.Module, example: torch.Tensor | None = None) -> list[list[str]]:
    """Entries in forward order, grouped into re-initialisation units.

    A unit is a layer that owns parameters (a convolution, a linear layer, an attention block, one
    layer of a recurrent module, an embedding, a parameter of its own) with the normalisation layers of
    its channels: an output norm joins the unit before it, an input norm (`input_norms`, pre-norm
    models) the unit after it, ahead of the layer. Without `example`, every parameter-owning module is
    an entry and registration order is forward order (the registry's models); with it, the order is
    traced (`traced_order`). A model may state its units itself, in a method `reinit_units()`.
    """
    if callable(getattr(model, "reinit_units", None)):
        return _stated_units(model)
    order = list(entries(model, by_module=True)) if example is None else traced_order(model, example)
    modules = dict(model.named_modules())
    inputs = input_norms(model)
    units: list[list[str]] = []
    pending: list[str] = []  # input norms waiting for their layer
    for entry in order:
        if entry in inputs:
            pending.append(entry)
        elif isinstance(modules.get(entry), NORMS) and units:
            units[-1].append(entry)
        else:
            units.append(pending + [entry])
            pending = []
    if pending and units:  # a norm after the last layer: it can only go with that layer
        units[-1].extend(pending)
    elif pending:
        units.append(pending)
    return units


def unit_entries(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of every entry units may name: those of `entries(by_module=True)` (the registry's
    models, stated units) and of `entries()` (traced, stated units)."""
    return {**entries(model, by_module=True), **entries(model)}


def _stated_units(model: nn.Module) -> list[list[str]]:
    units = [list(u) for u in model.reinit_units()]
    named = [n for u in units for n in u]
    found = unit_entries(model)
    params = {id(t) for _, t in model.named_parameters()}
    unknown = [n for n in named if n not in found]
    covered = [id(t) for n in named if n in found for t in found[n].values() if id(t) in params]
    if unknown or len(covered) != len(set(covered)) or set(covered) != params:
        missing = [n for n, t in model.named_parameters() if id(t) not in set(covered)]
        raise ConfigError(
            f"model.name: reinit_units() must name every parameter once, by its module (the "
            f"root's own parameters by their names) (missing: {', '.join(missing) or '-'}; "
            f"unknown or repeated: {', '.join(unknown) or ', '.join(sorted({n for n in named if named.count(n) > 1})) or '-'})"
        )
    return units
