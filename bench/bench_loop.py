"""Target "A loop with no waste": coupledsgd.engine.training.train vs the bare forward/backward/step.

Measures, on one thread, examples/s of `train` (batch_indices selection, augmentation, lr schedule,
the SGD step, progress accounting) against a bare loop over one fixed, pre-selected batch with the
same model class and the same `SGD`, alternating the two variants and taking medians.

  (a) ResNet-20, random uint8 CIFAR-shaped data (50,000 x 3 x 32 x 32), batch 128, crop+flip on.
  (b) cnn1d, MNIST-1D-like (1000, 1, 40) float data, batch 64, augmentation off (config.yaml).
  (c) evaluation cost of a default member: 600 steps, evaluate=True (41 evaluation points on 1,000
      test examples) -- time inside `predict` as a fraction of the training time.

Target: ratio (a), (b) >= 0.90; evaluation fraction (c) <= 10 %.
Usage: python bench/bench_loop.py [--quick]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import median, save  # noqa: E402

import coupledsgd.engine.training as T  # noqa: E402
from coupledsgd.engine.data import DeviceData  # noqa: E402
from coupledsgd.engine.training import Hparams, Run, learning_rate, train  # noqa: E402

torch.set_num_threads(1)
QUICK = "--quick" in sys.argv


def make_data(kind: str) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    if kind == "cifar":
        n, n_test = 50_000, 1_000
        raw = torch.randint(0, 256, (n + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
        x = (raw.float() - 127.5) / 64.0          # "normalised" as data.load does, once
        y = torch.randint(0, 10, (n + n_test,), generator=g)
        return DeviceData(x[:n], y[:n], x[n:], y[n:], 10, crop_pad=4, flip=True)
    n, n_test = 1_000, 1_000
    x = torch.randn(n + n_test, 1, 40, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return DeviceData(x[:n], y[:n], x[n:], y[n:], 10, crop_pad=0, flip=False)


def fresh_run(model: str, data: DeviceData, h: Hparams) -> Run:
    return Run.fresh(model, data.in_shape, data.num_classes, h, {"init": 1, "order": 2, "aug": 3})


def time_train(run: Run, data: DeviceData, steps: int) -> float:
    t0 = time.perf_counter()
    train([run], data, run.step + steps)
    return time.perf_counter() - t0


def time_bare(run: Run, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    model, opt, h = run.model, run.optimizer, run.hparams
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step(h.lr)
    return time.perf_counter() - t0


def loop_ratio(label: str, model: str, kind: str, batch: int, steps: int, reps: int) -> dict:
    data = make_data(kind)
    # Long schedule so the cosine rate stays sane however many steps we take; report each epoch.
    h = Hparams(steps=100_000, batch_size=batch, lr=0.05)
    run_t, run_b = fresh_run(model, data, h), fresh_run(model, data, h)
    x = data.x_train[:batch].contiguous()
    y = data.y_train[:batch].contiguous()
    warm = max(3, steps // 10)
    time_train(run_t, data, warm), time_bare(run_b, x, y, warm)
    tt, tb = [], []
    for r in range(reps):  # alternate, and alternate which goes first
        if r % 2 == 0:
            tt.append(time_train(run_t, data, steps)); tb.append(time_bare(run_b, x, y, steps))
        else:
            tb.append(time_bare(run_b, x, y, steps)); tt.append(time_train(run_t, data, steps))
    ratios = [b / t for t, b in zip(tt, tb)]
    res = {"model": model, "batch": batch, "steps_per_rep": steps, "reps": reps,
           "train_examples_per_s": batch * steps / median(tt),
           "bare_examples_per_s": batch * steps / median(tb),
           "ratio_median_of_pairs": median(ratios), "ratios": ratios,
           "ratio_of_medians": median(tb) / median(tt), "target": ">= 0.90"}
    res["met"] = res["ratio_median_of_pairs"] >= 0.90
    print(f"[{label}] train {res['train_examples_per_s']:.0f} ex/s, bare {res['bare_examples_per_s']:.0f} ex/s, "
          f"ratio {res['ratio_median_of_pairs']:.3f} (pairs {[round(r, 3) for r in ratios]})")
    return res


def pipeline_parts(kind: str, batch: int, n: int = 200) -> dict:
    """Per-step cost of each non-model part of the loop, in ms (for diagnosis)."""
    from coupledsgd.engine.data import augment, batch_indices
    data = make_data(kind)
    out = {}
    t0 = time.perf_counter()
    for s in range(n):
        idx = batch_indices(2, s, data.n_train, batch)
    out["batch_indices_ms"] = 1e3 * (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for s in range(n):
        xb = data.x_train[idx]
    out["gather_ms"] = 1e3 * (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for s in range(n):
        augment(xb, 3, s, data.crop_pad, data.flip)
    out["augment_ms"] = 1e3 * (time.perf_counter() - t0) / n
    h = Hparams(steps=600, batch_size=batch, lr=0.1)
    t0 = time.perf_counter()
    for s in range(n):
        learning_rate(h, s)
    out["learning_rate_ms"] = 1e3 * (time.perf_counter() - t0) / n
    return out


def eval_fraction(reps: int, batch_sizes=(1000, 250, 100)) -> dict:
    """Default member: 600 steps, batch 64, evaluation each epoch (41 points) on 1,000 test examples.

    Variants, interleaved (rotating order): no evaluation, and evaluation with each eval_batch_size
    (1000 is the default of Hparams). The fraction is time inside `predict` over the rest of `train`.
    """
    data = make_data("mnist1d")
    spent = []
    orig = T.predict

    def timed_predict(*a, **k):
        t0 = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    variants = [None, *batch_sizes]
    totals = {v: [] for v in variants}
    fracs = {v: [] for v in batch_sizes}
    counts = {}
    train([fresh_run("cnn1d", data, Hparams(steps=600, batch_size=64, lr=0.1))], data, 60, evaluate=True)  # warm-up
    for r in range(reps):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            h = Hparams(steps=600, batch_size=64, lr=0.1, eval_batch_size=v or 1000)
            run = fresh_run("cnn1d", data, h)
            spent.clear()
            T.predict = timed_predict
            try:
                t0 = time.perf_counter()
                train([run], data, run.end, evaluate=v is not None)
                total = time.perf_counter() - t0
            finally:
                T.predict = orig
            totals[v].append(total)
            if v is not None:
                counts[v] = len(spent)
                fracs[v].append(sum(spent) / (total - sum(spent)))
    base = median(totals[None])
    res = {"steps": 600, "evaluations": counts[batch_sizes[0]], "test_examples": 1000, "reps": reps,
           "train_without_eval_s": base, "by_eval_batch_size": {}, "target": "<= 0.10"}
    for v in batch_sizes:
        d = {"eval_fraction_of_training_median": median(fracs[v]),
             "eval_fraction_by_difference": (median(totals[v]) - base) / base,
             "train_with_eval_s": median(totals[v])}
        res["by_eval_batch_size"][str(v)] = d
        print(f"[eval bs={v}] {counts[v]} evaluations: {100 * d['eval_fraction_of_training_median']:.1f}% of "
              f"training time (by difference {100 * d['eval_fraction_by_difference']:.1f}%); "
              f"{d['train_with_eval_s']:.2f}s with, {base:.2f}s without")
    default = res["by_eval_batch_size"][str(batch_sizes[0])]
    res["eval_fraction_of_training_median"] = default["eval_fraction_of_training_median"]
    res["met"] = default["eval_fraction_of_training_median"] <= 0.10
    return res


if __name__ == "__main__":
    reps = 3 if QUICK else 5
    results = {
        "threads": torch.get_num_threads(),
        "resnet20_cifar": loop_ratio("resnet20", "resnet20", "cifar", 128, 10 if QUICK else 30, reps),
        "cnn1d_mnist1d": loop_ratio("cnn1d", "cnn1d", "mnist1d", 64, 300, reps),
        "evaluation": eval_fraction(reps),
        "parts_cifar_b128": pipeline_parts("cifar", 128, 50),
        "parts_mnist1d_b64": pipeline_parts("mnist1d", 64),
    }
    print("per-step parts (ms):", results["parts_cifar_b128"], results["parts_mnist1d_b64"])
    save("bench_loop", results)
