"""A model of one's own (model.name "poisoned_net:Net") that fails by construction, not by rounding:
the member or parent built from an initialisation seed in `nan_seeds` multiplies its logits by NaN
(its training loss is NaN from its first step), one built from a seed in `zero_seeds` by 0 (its logits
are 0: at chance with the finite loss ln(classes)); any other is a plain two-layer network. Members
and parents are told apart by their seeds (`core.seeds`), which `engine.models.build_model` sets
before building the model."""

import math

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes, nan_seeds=(), zero_seeds=(), width=32):
        super().__init__()
        seed = torch.initial_seed()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                                  nn.Linear(width, num_classes))
        gain = float("nan") if seed in nan_seeds else 0.0 if seed in zero_seeds else 1.0
        self.register_buffer("gain", torch.tensor(gain))

    def forward(self, x):
        return self.body(x) * self.gain
