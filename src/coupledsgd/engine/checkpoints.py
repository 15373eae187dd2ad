"""Checkpoints (model, optimizer and run state) saved atomically and loaded with checks."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..core.errors import ArtifactError
from ..core.files import atomic_path


class _Recorded(io.RawIOBase):
    """A file for torch.save that keeps the OSError of a failed write: torch itself reports a full
    disk as a RuntimeError ("unexpected pos") that names neither the error nor the file."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view, done = memoryview(data), 0
        try:
            while done < len(view):
                done += self.raw.write(view[done:])
        except OSError as e:
            self.error = e
            raise
        return done


def save_torch(obj, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as raw:
        out = _Recorded(raw)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None


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
