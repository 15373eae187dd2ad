"""Files the workflow writes: complete under their final names, with the mode an ordinary open() gives."""

import os
import stat
import subprocess
import sys

import pytest


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_of_the_users_umask(tmp_path, umask, mode):
    # A fresh process: the mode is read from the umask once per process.
    code = ("import os, sys, numpy as np; os.umask(int(sys.argv[2], 8)); "
            "from coupledsgd.engine.checkpoints import save_torch; from coupledsgd.core.parquet import write_predictions; "
            "save_torch({'a': 1}, sys.argv[1] + '/state.pt'); "
            "write_predictions(sys.argv[1] + '/p.parquet', {'condition': 'no-coupling', 't': 0, 'parent': 0, "
            "'child': 0}, np.zeros(3, dtype=np.int64), np.zeros((3, 2), dtype=np.float32), {})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), oct(umask)], check=True)
    for name in ("state.pt", "p.parquet"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet", "state.pt"]  # no temporary left
