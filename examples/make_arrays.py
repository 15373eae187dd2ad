"""Write a labelled dataset as the .npz file `data.name: arrays` reads: x_train, y_train, x_test,
y_test, inputs (N, channels, length) float32, integer labels 0..classes-1.

The task: each class is a sum of two sinusoids of its own frequencies, shifted by a random phase and
buried in noise, so a model must find the frequencies wherever the wave starts.

    python examples/make_arrays.py examples/signals.npz
"""

import argparse

import numpy as np


def make(n: int, classes: int, length: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, classes, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    f1, f2 = 1 + y[:, None], 2 + 2 * y[:, None]
    x = np.sin(2 * np.pi * f1 * t + phase) + 0.5 * np.sin(2 * np.pi * f2 * t + 2 * phase)
    x += noise * rng.standard_normal((n, length))
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the .npz file to write")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    x_train, y_train = make(a.n_train, a.classes, a.length, a.noise, rng)
    x_test, y_test = make(a.n_test, a.classes, a.length, a.noise, rng)
    np.savez(a.path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"{a.path}: {a.n_train} training and {a.n_test} test signals {x_train.shape[1:]}, {a.classes} classes")


if __name__ == "__main__":
    main()
