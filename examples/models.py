"""Two models of your own for the workflow, named in a config as "examples.models:mlp" and
"examples.models:cnn" (run from the repository root, which is then on the module search path).

Each is a callable(in_shape, num_classes, **model.kwargs) returning an nn.Module that maps a batch of
in_shape inputs to num_classes logits. Modules are registered in the order forward calls them, so
re-initialisation finds its units (a layer with the normalisation that follows it) by itself.
"""

import math

from torch import nn


def mlp(in_shape, num_classes, width=64, depth=2):
    """A multilayer perceptron with LayerNorm after every hidden layer."""
    layers, features = [nn.Flatten()], math.prod(in_shape)
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.LayerNorm(width), nn.ReLU()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


class SignalCNN(nn.Module):
    """A 1-D CNN with BatchNorm for (channels, length) signals: two convolutions, global average
    pooling, a linear classifier."""

    def __init__(self, in_shape, num_classes, channels=16):
        super().__init__()
        c = in_shape[0]
        self.conv1 = nn.Conv1d(c, channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, 2 * channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(2 * channels)
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x)).relu()
        return self.fc(x.mean(-1))


def cnn(in_shape, num_classes, channels=16):
    return SignalCNN(in_shape, num_classes, channels)
