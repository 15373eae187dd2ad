"""Coupled SGD: how sharing the first t iterations of training shrinks ensemble diversity."""

__version__ = "0.1.0"
