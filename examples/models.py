"""Models of your own for the workflow, named in a config as "examples.models:mlp", "...:cnn",
"...:transformer", "...:gru", "...:lstm" or "...:dropout_cnn" (run from the repository root, which
is then on the module search path).

Each is a callable(in_shape, num_classes, **model.kwargs) returning an nn.Module that maps a batch of
in_shape inputs to num_classes logits. They are plain torch.nn building blocks: re-initialisation
traces one forward pass for its units (a layer with the normalisation that belongs to it), and
dropout draws from each member's seeded stream.
"""

import math

import torch
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


# Stock torch.nn building blocks as they come: attention, recurrent layers, dropout. Re-initialisation
# finds their units by tracing one forward pass; nothing here states them.

class SignalTransformer(nn.Module):
    """A pre-norm transformer classifier for (channels, length) signals: each position a token, a class
    token and a learned position embedding owned by the model itself, nn.TransformerEncoder with
    norm_first=True and a final LayerNorm, a linear head on the class token."""

    def __init__(self, in_shape, num_classes, width=32, heads=4, layers=2, dropout=0.0):
        super().__init__()
        c, length = in_shape
        self.embed = nn.Linear(c, width)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(0.02 * torch.randn(1, length + 1, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        tokens = self.embed(x.transpose(1, 2))
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], 1) + self.position
        return self.head(self.encoder(tokens)[:, 0])


def transformer(in_shape, num_classes, width=32, heads=4, layers=2, dropout=0.0):
    return SignalTransformer(in_shape, num_classes, width, heads, layers, dropout)


class Recurrent(nn.Module):
    """A GRU or LSTM over the positions of a (channels, length) signal, a linear head on the last
    output."""

    def __init__(self, in_shape, num_classes, cell="gru", hidden=32, layers=2, bidirectional=False, dropout=0.0):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(in_shape[0], hidden, layers, batch_first=True, bidirectional=bidirectional, dropout=dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x):
        out, _ = self.rnn(x.transpose(1, 2))
        return self.head(out[:, -1])


def gru(in_shape, num_classes, hidden=32, layers=2, bidirectional=False, dropout=0.0):
    return Recurrent(in_shape, num_classes, "gru", hidden, layers, bidirectional, dropout)


def lstm(in_shape, num_classes, hidden=32, layers=2, bidirectional=False, dropout=0.0):
    return Recurrent(in_shape, num_classes, "lstm", hidden, layers, bidirectional, dropout)


def dropout_cnn(in_shape, num_classes, channels=8, p=0.25):
    """An image CNN with BatchNorm and Dropout2d after each convolution."""
    c = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(), nn.Dropout2d(p),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * channels),
        nn.ReLU(), nn.Dropout2d(p), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, num_classes))
