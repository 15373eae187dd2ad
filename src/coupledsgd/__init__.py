"""Coupled SGD: how sharing the first t iterations of training shrinks ensemble diversity."""

__version__ = "0.2.0"  # as pyproject.toml and CHANGELOG.md
