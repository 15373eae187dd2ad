"""Fused children: k runs that share hparams, model and step range, trained as one batched model.

`train_fused(runs, data)` has the semantics of `training.train(run, data, run.end, ...)` for each run
separately: each member keeps its own minibatch (`order` seed), augmentation (`aug` seed), BatchNorm
statistics and momentum buffers. The loss is the sum of the members' mean losses, so each member's
gradient is its own solo gradient.

Two ways to batch the members:

- `cnn1d`: one model with grouped convolutions (`groups=k`), BatchNorm over k*C channels and a
  per-member linear head. Member i's input channels, convolution filters and BatchNorm channels are
  the i-th block of k, so every per-member computation is the solo one.
- every other model: `torch.func.stack_module_state` + `vmap` over `functional_call`. BatchNorm
  running statistics (and `num_batches_tracked`) are stacked buffers updated in place under vmap,
  member by member, which torch supports; no sequential fallback is needed for the registry's models.

In both, every fused tensor `T` of a parameter or buffer of solo shape `s` satisfies
`T.view(k, *s)[i] == member i's tensor`. The update is done member by member by each run's own
`training.SGD` (its `step`) on views into the fused parameters and gradients, so it is the solo
arithmetic on the solo shapes (no rounding difference from vectorised vs scalar tails), weight
decay goes only to tensors of dimension > 1 of the original model, and the momentum buffers are the
runs' own tensors. On this machine (torch 2.14, CPU) the fused forward and backward are bit-identical
to solo in float64 and float32; tests/test_fused.py checks float64 for equality and float32 within a
tolerance.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceData, augment, batch_indices, steps_per_epoch
from .models import CNN1d
from .training import Run, Trajectory, evaluation_steps, learning_rate


class _Heads(nn.Module):
    """k linear layers applied member by member: weight (k, out, in), bias (k, out)."""

    def __init__(self, heads: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([h.weight.detach() for h in heads]))
        self.bias = nn.Parameter(torch.stack([h.bias.detach() for h in heads]))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        # F.linear on each member's features, exactly as nn.Linear computes it alone.
        return torch.stack([F.linear(x, w, b) for x, w, b in zip(xs, self.weight, self.bias)])


class FusedCNN1d(nn.Module):
    """k `CNN1d`s as one network: inputs (k, B, C, L) -> logits (k, B, classes).

    Parameter and buffer names are those of `CNN1d`; `num_batches_tracked` is one shared counter.
    """

    def __init__(self, models: list[CNN1d]):
        super().__init__()
        k = self.k = len(models)
        layers = []
        for modules in zip(*(m.features for m in models)):
            m0 = modules[0]
            if isinstance(m0, nn.Conv1d):
                layer = nn.Conv1d(k * m0.in_channels, k * m0.out_channels, m0.kernel_size, m0.stride,
                                  m0.padding, m0.dilation, groups=k * m0.groups, bias=m0.bias is not None,
                                  padding_mode=m0.padding_mode)
            elif isinstance(m0, nn.BatchNorm1d):
                layer = nn.BatchNorm1d(k * m0.num_features, m0.eps, m0.momentum, m0.affine,
                                       m0.track_running_stats)
            elif isinstance(m0, nn.ReLU):
                layer = nn.ReLU(inplace=m0.inplace)
            else:
                raise TypeError(f"FusedCNN1d: cannot fuse {type(m0).__name__}")
            layer.to(next(models[0].parameters()))
            with torch.no_grad():
                for name, t in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
                    if name != "num_batches_tracked":
                        t.copy_(torch.cat([getattr(m, name) for m in modules]))
            layers.append(layer)
        self.features = nn.Sequential(*layers)
        self.classifier = _Heads([m.classifier for m in models])

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Member inputs xs[i] (B, C, L) -> logits (k, B, classes).

        CPU convolution kernels pick their algorithm (and so the rounding) from the memory format of
        the input. A conv1d input is viewed as (B, C, 1, L); an augmented MNIST-1D batch (C = 1) reads
        as channels-last there. The fused input is laid out as the members' are, so every group runs
        the kernel its member runs alone; the layers after the first keep that correspondence.
        """
        x, layers = torch.cat(xs, 1), list(self.features)
        if _channels_last(xs[0].unsqueeze(2)):
            conv = layers.pop(0)
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            x = F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, (1, conv.stride[0]), (0, conv.padding[0]),
                         (1, conv.dilation[0]), conv.groups).squeeze(2)
        for layer in layers:
            x = layer(x)
        return self.classifier(x.flatten(1).view(x.shape[0], self.k, -1).unbind(1))


def _channels_last(x: torch.Tensor) -> bool:
    """c10's is_channels_last_strides_2d for a 4D tensor: what suggest_memory_format() answers."""
    sizes, strides = x.shape, x.stride()
    if strides[1] == 0:
        return False
    low = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < low or (d == 0 and low == strides[1]):
            return False
        low = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


class _Vmapped(nn.Module):
    """Any model, k times: stacked parameters and buffers, `vmap` over `functional_call`."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        from torch.func import stack_module_state

        self.k = len(models)
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"b{i}", buffers[n])
        self.base = [copy.deepcopy(models[0]).to("meta")]  # a list: not a submodule

    def tensors(self) -> dict[str, torch.Tensor]:
        """Solo name -> stacked tensor (k, *solo shape), parameters then buffers."""
        out = dict(zip(self.names, self.stacked))
        out.update({n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)})
        return out

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        from torch.func import functional_call, vmap

        x = torch.stack(xs)

        base = self.base[0].train(self.training)
        params = dict(zip(self.names, self.stacked))
        buffers = {n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)}
        call = lambda p, b, xi: functional_call(base, (p, b), (xi,))
        return vmap(call, randomness="different")(params, buffers, x)


class Fused:
    """k runs' models and optimizers bound to one batched model (see the module docstring)."""

    def __init__(self, runs: list[Run]):
        self.runs, self.k = runs, len(runs)
        models = [r.model for r in runs]
        if runs[0].model_name == "cnn1d" and all(isinstance(m, CNN1d) for m in models):
            self.net: nn.Module = FusedCNN1d(models)
            tensors = {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}
            self.counters = [n for n in tensors if n.endswith("num_batches_tracked")]
            self.counts = {n: [r.model.get_buffer(n).clone() for r in runs] for n in self.counters}
        else:
            self.net = _Vmapped(models)
            tensors, self.counters, self.counts = self.net.tensors(), [], {}
        self.tensors = tensors
        names = [n for n, _ in models[0].named_parameters()]
        self.params = [tensors[n] for n in names]
        assert all(p.is_leaf and p.requires_grad for p in self.params)
        # Member i's parameters as views of the fused ones; each run's own SGD updates them.
        self.views = [[p.detach().view(self.k, *q.shape)[i] for p, q in zip(self.params, r.model.parameters())]
                      for i, r in enumerate(runs)]
        self._solo_params = [r.optimizer.params for r in runs]
        for r, views in zip(runs, self.views):
            r.optimizer.params = views

    def step(self, lr: float) -> None:
        for i, (run, views) in enumerate(zip(self.runs, self.views)):
            for v, p in zip(views, self.params):
                v.grad = p.grad.view(self.k, *v.shape)[i]
            run.optimizer.step(lr)
        for views in self.views:
            for v in views:
                v.grad = None
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def write_back(self, steps_trained: int) -> None:
        """Copy weights and buffers into each run's model; give back each run's own SGD parameters."""
        for i, (run, solo) in enumerate(zip(self.runs, self._solo_params)):
            for name, t in [*run.model.named_parameters(), *run.model.named_buffers()]:
                if name in self.counts:
                    t.copy_(self.counts[name][i] + steps_trained)
                else:
                    t.copy_(self.tensors[name].view(self.k, *t.shape)[i])
            run.optimizer.params = solo

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Logits (k, N, classes) of every member on the same inputs, in eval mode."""
        was_training = self.net.training
        self.net.eval()
        # Chunks of batch_size // k examples: the fused activations of a chunk are the size of one
        # member's at batch_size (much faster here than k times that; per-example results are equal).
        size = max(1, batch_size // self.k)
        out = torch.cat([self.net([x[i:i + size]] * self.k) for i in range(0, len(x), size)], dim=1)
        self.net.train(was_training)
        return out


def _check(runs: list[Run], until: int | None) -> int:
    r0 = runs[0]
    for r in runs[1:]:
        assert r.hparams == r0.hparams, "fused runs must share hparams"
        assert r.model_name == r0.model_name and r.in_shape == r0.in_shape and r.num_classes == r0.num_classes, \
            "fused runs must share the model"
        assert (r.step == r0.step and r.schedule_start == r0.schedule_start
                and getattr(r, "start", None) == getattr(r0, "start", None)), \
            "fused runs must share start step, current step and schedule"
    assert len({id(r.model) for r in runs}) == len(runs), "fused runs must not share a model"
    return r0.end if until is None else until


def train_fused(runs: list[Run], data: DeviceData, until: int | None = None, evaluate: bool = False,
                log: Callable[[str], None] = lambda line: None,
                trajectories: list[Trajectory] | None = None) -> list[Trajectory]:
    """Train `runs` in place, fused, from their (common) step to `until` (default: their end).

    The same as `training.train(run, data, until, evaluate, log, trajectory)` for each run, with one
    log line per report point for all members. Each run's model, momentum buffers and step hold the result.
    """
    until = _check(runs, until)
    r0, k = runs[0], len(runs)
    h, start = r0.hparams, r0.step
    spe = steps_per_epoch(data.n_train, h.batch_size)
    every = h.eval_every or spe
    # Evaluation points are fixed by the runs' first step (Run.start where training.py has it).
    first = getattr(r0, "start", start)
    report_at = set(evaluation_steps(first, until, min(every, spe)))
    eval_at = set(evaluation_steps(first, r0.end, every)) if evaluate else set()
    trajectories = trajectories if trajectories is not None else [Trajectory() for _ in runs]
    fused = Fused(runs)
    fused.net.train()
    device = data.x_train.device
    loss_sum = torch.zeros(k, device=device)
    hits = torch.zeros(k, dtype=torch.int64, device=device)
    step, seen, clock = start, 0, time.perf_counter()
    try:
        while True:
            if step in eval_at:
                logits = fused.predict(data.x_test, h.eval_batch_size)
                correct = logits.argmax(2).eq(data.y_test)
                for t, c, z in zip(trajectories, correct.cpu().numpy(), logits):
                    t.steps.append(step)
                    t.correct.append(c)
                    if step == r0.end:
                        t.final_logits = z
            if step in report_at and step > 0 and seen:
                rate = seen / (time.perf_counter() - clock)
                fmt = lambda a: " ".join(f"{v:.4f}" for v in a)
                test = (f" test_acc {fmt(t.correct[-1].mean() for t in trajectories)}"
                        if step in eval_at else "")
                log(f"step {step}/{r0.end} lr {learning_rate(h, step - 1 - r0.schedule_start):.5f} "
                    f"k {k} loss {fmt((loss_sum / seen).tolist())} train_acc {fmt((hits / seen).tolist())}"
                    f"{test} examples/s {k * rate:.0f}")
                loss_sum.zero_(), hits.zero_()
                seen, clock = 0, time.perf_counter()
            if step >= until:
                return trajectories
            xs, ys = [], []
            for r in runs:
                idx = batch_indices(r.seeds["order"], step, data.n_train, h.batch_size).to(device)
                xs.append(augment(data.x_train[idx], r.seeds["aug"], step, data.crop_pad, data.flip))
                ys.append(data.y_train[idx])
            out = fused.net(xs)
            # The sum of the members' own mean losses: member i's gradient is its solo gradient.
            losses = [F.cross_entropy(o, y) for o, y in zip(out, ys)]
            sum(losses).backward()
            fused.step(learning_rate(h, step - r0.schedule_start))
            with torch.no_grad():
                loss_sum += torch.stack(losses).detach() * len(ys[0])
                hits += out.argmax(2).eq(torch.stack(ys)).sum(1)
            seen += len(ys[0])
            step += 1
    finally:
        fused.write_back(step - start)
        for r in runs:
            r.step = step
