"""Labelled arrays from an .npz file (`data.name: arrays`): read and checked with numpy alone, so the
config check finds a malformed file before any job starts.

The file holds x_train, y_train, x_test, y_test: inputs of any shape (N, C, ...), float or uint8,
channels on axis 1 as the built-in datasets lay them out; integer labels 0..C-1, C one more than the
largest training label.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import ConfigError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The four arrays of `path`, checked; every problem is a ConfigError naming data.path and the file."""
    where = f"data.path: {path}"
    if not path:
        raise ConfigError("data.path: dataset 'arrays' needs the .npz file that holds x_train, y_train, x_test, y_test")
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive of named arrays")
        with npz:
            missing = [k for k in KEYS if k not in npz.files]
            arrays = {k: npz[k] for k in KEYS if k not in missing}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(f"{where}: not a readable .npz file ({e})") from None
    if missing:
        raise ConfigError(
            f"{where}: has no {', '.join(missing)} (it holds {', '.join(npz.files) or 'nothing'}; "
            f"needed: {', '.join(KEYS)})"
        )
    _check(arrays, where)
    return arrays


def _check(a: dict[str, np.ndarray], where: str) -> None:
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"{where}: x_{split} is {x.dtype}; inputs are float or uint8")
        if x.ndim < 2:
            raise ConfigError(f"{where}: x_{split} has shape {x.shape}; inputs are (examples, channels, ...)")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"{where}: y_{split} is {y.dtype} of shape {y.shape}; labels are one integer per example")
        if len(x) != len(y):
            raise ConfigError(f"{where}: x_{split} holds {len(x)} examples but y_{split} {len(y)} labels")
        if len(y) == 0:
            raise ConfigError(f"{where}: the {split} split is empty")
        if x.dtype != np.uint8 and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
            raise ConfigError(f"{where}: x_{split} holds non-finite values (example {bad} first)")
    if a["x_test"].shape[1:] != a["x_train"].shape[1:]:
        raise ConfigError(
            f"{where}: test inputs are {a['x_test'].shape[1:]}, training inputs "
            f"{a['x_train'].shape[1:]}; both splits need one input shape"
        )
    classes = int(a["y_train"].max()) + 1
    for split in ("train", "test"):
        y = a[f"y_{split}"]
        if y.min() < 0 or y.max() >= classes:
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ConfigError(
                f"{where}: y_{split} holds label {bad}, outside 0..{classes - 1} (the classes "
                "are 0 to the largest training label)"
            )
