import pytest

from coupledsgd.engine import data as D


@pytest.fixture(scope="session")
def mnist1d_path(tmp_path_factory):
    """MNIST-1D, first 256 training examples, prepared once for the session."""
    path = tmp_path_factory.mktemp("data") / "mnist1d.pt"
    D.prepare("mnist1d", path, n_train=256)
    return path
