"""Shared helpers for the bench scripts (not a benchmark itself)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def machine() -> dict:
    try:
        model = next(l.split(":", 1)[1].strip() for l in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name"))
    except Exception:
        model = platform.processor()
    import os
    return {"cpu": model, "cores": os.cpu_count(), "gpu": "none", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
