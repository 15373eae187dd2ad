"""Checkpoints (model, optimizer and run state) saved atomically and loaded with checks."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.errors import ArtifactError
from ..core.files import atomic_path


def save_torch(obj, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, what: str = "checkpoint", map_location="cpu") -> dict:
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {what} not found") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArtifactError(f"{path}: not a readable {what} ({type(e).__name__}: {first_line})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: not a {what} (holds a {type(obj).__name__})")
    return obj
