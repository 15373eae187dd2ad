"""One SGD step of k members as one network: eager, or recorded once and replayed (CUDA graphs).

A step takes the members' channel-stacked batch x (B, k x C, ...) and labels y (k, B), and returns each
member's mean loss and number of correct predictions as device tensors, read by the loop only at its
report points.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def _loss(forward, x: torch.Tensor, y: torch.Tensor, accel):
    """The sum of the members' mean losses (member i's gradient is its solo gradient), each member's
    loss and its number of correct predictions. x: (B, k x C, ...), y: (k, B)."""
    k, b = y.shape
    with accel.autocast(x):
        out = accel.output(forward(accel.batch(x)))
    if k == 1:  # the solo arithmetic, so a one-member job gives the results it always gave
        loss = F.cross_entropy(out, y[0])
        losses = loss.detach().view(1)
    else:
        per = F.cross_entropy(out.view(b * k, -1), y.t().reshape(-1), reduction="none")
        loss, losses = per.sum() / b, per.detach().view(b, k).mean(0)
    hits = out.detach().view(b, k, -1).argmax(2).eq(y.t()).sum(0)
    return loss, losses, hits


class EagerStep:
    def __init__(self, forward, optimizer, accel):
        self.forward, self.optimizer, self.accel = forward, optimizer, accel

    def __call__(self, x, y, lr: float):
        loss, losses, hits = _loss(self.forward, x, y, self.accel)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(lr)
        return losses, hits


class GraphedStep:
    """The whole step (forward, backward, update) recorded once and replayed: on CUDA a CUDA graph
    over static input buffers with the learning rate as a device tensor.

    Recording needs warm-up steps, which really train: every tensor they change is restored after.
    On the CPU nothing is recorded and each replay runs the same body, so the tests check this logic
    (warm-up, restore, the tensor learning rate) without a GPU.
    """

    WARMUP = 3

    def __init__(self, forward, optimizer, accel, state: list[torch.Tensor], x, y):
        self.forward, self.optimizer, self.accel = forward, optimizer, accel
        self.x, self.y = x.clone(), y.clone()
        self.lr = torch.zeros((), dtype=optimizer.params[0].dtype, device=x.device)
        # Warm-up and capture on one side stream: an autograd node remembers the stream it was made
        # on, and a capture whose backward waits on the default stream fails. A parameter's gradient
        # accumulator lives as long as any autograd history of the parameter, so nothing before the
        # warm-up may record history: a copy of a parameter made with autograd on (a clone) would make
        # its accumulator here, on the default stream, and keep it alive through the capture.
        with torch.no_grad():
            saved = [t.clone() for t in state]
        cuda = x.device.type == "cuda"
        stream = torch.cuda.Stream() if cuda else None
        if cuda:
            stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
            for _ in range(self.WARMUP):
                self.optimizer.zero_grad()
                self._body()
            with torch.no_grad():
                for t, v in zip(state, saved):
                    t.copy_(v)
            self.optimizer.zero_grad()
        self.graph, self.failure = None, None
        if cuda:
            try:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, stream=stream):
                    self.out = self._body()
            except RuntimeError as error:
                # A refused capture (bench_gpu.py counts it as an error) costs a job speed only:
                # nothing captured ran, so the step runs uncaptured, with the same kernels and the
                # same tensor-lr arithmetic as a replay.
                self.graph, self.failure = None, str(error).splitlines()[0]
                self.optimizer.zero_grad()
            torch.cuda.current_stream().wait_stream(stream)

    def _body(self):
        loss, losses, hits = _loss(self.forward, self.x, self.y, self.accel)
        loss.backward()
        self.optimizer.step_lr_tensor(self.lr)
        return losses, hits

    def __call__(self, x, y, lr: float):
        self.x.copy_(x)
        self.y.copy_(y)
        self.lr.fill_(lr)
        if self.graph is None:
            self.optimizer.zero_grad()
            return self._body()
        self.graph.replay()
        return self.out
