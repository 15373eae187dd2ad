"""How often the claims table's verdicts err, at the paper's 3 parents, the default's 4 and at 10.

1. Synthetic per-parent values of known truth (`coupledsgd.analysis.calibration`, the table
   tests/test_claims_calibration.py asserts): for each scenario the share of draws called `supported`
   (under a null: the false-positive rate, at most 5% allowed; under an effect of the default run's
   size: the power) and the coverage of the 95% intervals.
2. The default run's own metric tables (results/mnist1d-cnn1d/metrics, if the run is there) with the
   trend destroyed: the spawn steps permuted among each parent's rows (the same permutation for every
   table and condition of that parent), so no claim of a trend over t is true; how often the trend
   claims are still called `supported`, with the first 3 parents and with all 4.

Usage: python bench/bench_claims_calibration.py [--reps N] [--perm-reps N] [--shuffles N]
Writes bench/results/bench_claims_calibration.json. About 1 minute here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save  # noqa: E402

from coupledsgd.analysis import calibration as CAL  # noqa: E402
from coupledsgd.analysis import claims as C  # noqa: E402


def arg(name: str, default: int) -> int:
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


REPS, PERM_REPS, SHUFFLES = arg("--reps", 1000), arg("--perm-reps", 300), arg("--shuffles", 40)
TREND_CLAIMS = ["gain-falls", "gain-falls-reset", "kl-same-parent-falls", "kl-same-parent-falls-early",
                "cumulative-forgetting-falls", "barrier-falls"]
TABLES = ROOT / "results/mnist1d-cnn1d/metrics"


def shuffled(tables: dict, parents: list[int], rng) -> dict:
    """The tables of `parents` with each parent's spawn steps permuted (no-coupling and coupled-order
    rows, at t = 0 only, are left as they are)."""
    steps = sorted(set(tables["ensembles"].loc[tables["ensembles"]["t"] > 0, "t"]) | {0})
    maps = {p: dict(zip(steps, rng.permutation(steps))) for p in parents}
    out = {}
    for name, df in tables.items():
        col = "parent_a" if name == "pairs" else "parent"
        df = df[df[col].isin(parents) & (df["parent_b"].isin(parents) if name == "pairs" else True)].copy()
        coupled = df["condition"].astype(str).isin([C.TO_T, C.RESET])
        new = [maps[p][t] for p, t in zip(df.loc[coupled, col], df.loc[coupled, "t"])]
        df.loc[coupled, "t"] = np.array(new, dtype=df["t"].dtype)
        out[name] = df
    return out


def on_the_default_run() -> list[dict]:
    if not (TABLES / "ensembles.parquet").exists():
        print(f"no metric tables in {TABLES.relative_to(ROOT)}: part 2 skipped")
        return []
    names = [n for n in ("members", "ensembles", "pairs", "forgetting", "barriers") if (TABLES / f"{n}.parquet").exists()]
    tables = {n: pd.read_parquet(TABLES / f"{n}.parquet") for n in names}
    rows = []
    for n in (3, 4):
        rng = np.random.default_rng(n)
        counts = dict.fromkeys(TREND_CLAIMS, 0)
        for _ in range(SHUFFLES):
            verdicts = C.claims_table(shuffled(tables, list(range(n)), rng)).set_index("claim")["verdict"]
            for c in TREND_CLAIMS:
                counts[c] += verdicts[c] == "supported"
        rows.append({"parents": n, "shuffles": SHUFFLES, **counts, "all": sum(counts.values()),
                     "rate": sum(counts.values()) / (SHUFFLES * len(TREND_CLAIMS))})
    return rows


def main() -> None:
    tick = time.perf_counter()
    table = CAL.table(parents=(3, 4, 10), reps=REPS, perm_reps=PERM_REPS)
    wide = table.pivot_table(index=["claim", "scenario", "truth"], columns="parents",
                             values=["supported", "coverage"], sort=False)
    pd.set_option("display.width", 200)
    print("1. synthetic tables: share called supported (null: false positives; effect: power), "
          "coverage of the 95% intervals")
    print(wide.round(3).to_string())
    real = on_the_default_run()
    if real:
        print("\n2. the default run's tables, spawn steps permuted within each parent: trend claims supported")
        print(pd.DataFrame(real).to_string(index=False))
    save("bench_claims_calibration", {"reps": REPS, "perm_reps": PERM_REPS, "rows": table.to_dict("records"),
                                      "default_run_shuffled": real, "seconds": time.perf_counter() - tick})


if __name__ == "__main__":
    main()
