"""Prediction files: bytes per prediction and read time of all predictions of an experiment.

Source: results/mnist1d-cnn1d/predictions (else results/smoke/predictions; else 176 synthetic members
of 1,000 examples x 10 classes written with coupledsgd.core.parquet.write_predictions). The files are
copied, as written, and rewritten in reference layouts into a temp folder (same folder tree):
  current      the files as the workflow writes them (key columns dictionary-encoded, float logit
               columns plain, zstd)
  dict_all     pyarrow's default: dictionary encoding on every column (zstd)
  fixed_list   logits as one FixedSizeList<float32, C> column (keys dictionary-encoded, zstd)
  single_file  every member in one file, current column layout (reference for the per-file cost)
Reads (pyarrow.dataset of the folder to a Table, and pd.read_parquet of the folder) alternate
between layouts, median of N.
Usage: python bench/bench_parquet.py [--reps N] [--source DIR]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median, save  # noqa: E402

REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 5
KEYS = ["condition", "t", "parent", "child"]


def find_source(tmp: Path) -> tuple[Path, str]:
    if "--source" in sys.argv:
        return Path(sys.argv[sys.argv.index("--source") + 1]), "given"
    for exp in ("mnist1d-cnn1d", "smoke"):
        d = ROOT / "results" / exp / "predictions"
        if d.is_dir() and any(d.rglob("*.parquet")):
            return d, f"results/{exp}"
    from coupledsgd.core.parquet import write_predictions
    rng = np.random.default_rng(0)
    out = tmp / "synthetic"
    conds = ["no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset"]
    for i in range(176):
        cond, p, c = conds[i % 4], (i // 4) % 2, i % 4
        t = 0 if i % 4 < 2 else [6, 12, 18, 30, 60, 180][i % 6]
        labels = rng.integers(0, 10, 1000)
        logits = rng.normal(0, 3, (1000, 10)).astype(np.float32)
        write_predictions(out / f"{cond}/t{t}/p{p}/c{c}_{i}.parquet", {"condition": cond, "t": t, "parent": p,
                          "child": c}, labels, logits, {"coupledsgd.params": "{}"})
    return out, "synthetic"


def rewrite(files: list[Path], src: Path, dst: Path, layout: str) -> None:
    for f in files:
        table = pq.read_table(f)
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if layout == "dict_all":
            pq.write_table(table, out, compression="zstd")
        elif layout == "fixed_list":
            logit_cols = [c for c in table.column_names if c.startswith("logit_")]
            mat = np.stack([table[c].to_numpy() for c in logit_cols], axis=1).astype(np.float32)
            arr = pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), len(logit_cols))
            t2 = table.drop_columns(logit_cols).append_column("logits", arr)
            pq.write_table(t2.replace_schema_metadata(table.schema.metadata), out, compression="zstd",
                           use_dictionary=KEYS)


def folder_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*.parquet"))


def read_dataset(d: Path):
    return ds.dataset(d, format="parquet").to_table()


def read_pandas(d: Path):
    return pd.read_parquet(d)


def breakdown(files: list[Path]) -> dict:
    """Where the bytes of the current files go: logit columns, key and id columns, footer/metadata."""
    logits = other = total = 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        total += f.stat().st_size
        for rg in range(md.num_row_groups):
            for j in range(md.num_columns):
                col = md.row_group(rg).column(j)
                if col.path_in_schema.startswith("logit_"):
                    logits += col.total_compressed_size
                else:
                    other += col.total_compressed_size
    return {"logit_columns": logits, "key_and_id_columns": other, "footer_and_metadata": total - logits - other}


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench_parquet."))
    try:
        src, origin = find_source(tmp)
        files = sorted(src.rglob("*.parquet"))
        first = pq.read_table(files[0])
        n_ex = first.num_rows
        n_cls = sum(c.startswith("logit_") for c in first.column_names)
        n_pred = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        layouts = {"current": tmp / "current", "dict_all": tmp / "dict_all", "fixed_list": tmp / "fixed_list",
                   "single_file": tmp / "single"}
        shutil.copytree(src, layouts["current"])
        for name in ("dict_all", "fixed_list"):
            rewrite(files, src, layouts[name], name)
        layouts["single_file"].mkdir()
        whole = ds.dataset(src, format="parquet").to_table()
        pq.write_table(whole, layouts["single_file"] / "all.parquet", compression="zstd", use_dictionary=KEYS)

        res = {"source": origin, "files": len(files), "examples_per_member": n_ex, "classes": n_cls,
               "predictions": n_pred, "reps": REPS, "layouts": {}}
        for name, d in layouts.items():
            b = folder_bytes(d)
            res["layouts"][name] = {"bytes": b, "bytes_per_prediction": b / n_pred,
                                    "bytes_per_logit": b / (n_pred * n_cls)}
        res["current_breakdown_bytes_per_prediction"] = {k: v / n_pred for k, v in breakdown(files).items()}
        res["raw_float32_bytes_per_prediction"] = 4 * n_cls

        for fn in (read_dataset, read_pandas):  # warm the page cache
            for d in layouts.values():
                fn(d)
        times = {(n, fn.__name__): [] for n in layouts for fn in (read_dataset, read_pandas)}
        names = list(layouts)
        for r in range(REPS):
            for n in names[r % len(names):] + names[:r % len(names)]:
                for fn in (read_dataset, read_pandas):
                    t0 = time.perf_counter()
                    fn(layouts[n])
                    times[(n, fn.__name__)].append(time.perf_counter() - t0)
        for (n, fn), ts in times.items():
            res["layouts"][n][f"{fn}_s"] = median(ts)
        cur = res["layouts"]["current"]
        for n, v in res["layouts"].items():
            v["read_dataset_vs_current"] = v["read_dataset_s"] / cur["read_dataset_s"]
            v["bytes_vs_current"] = v["bytes"] / cur["bytes"]

        print(f"source {origin}: {len(files)} files, {n_pred} predictions ({n_ex} examples x members), {n_cls} classes")
        print(f"{'layout':12} {'bytes/pred':>10} {'bytes/logit':>11} {'dataset s':>10} {'pandas s':>9}")
        for n, v in res["layouts"].items():
            print(f"{n:12} {v['bytes_per_prediction']:10.2f} {v['bytes_per_logit']:11.3f} "
                  f"{v['read_dataset_s']:10.4f} {v['read_pandas_s']:9.4f}")
        print("current, bytes per prediction by part:",
              {k: round(v, 2) for k, v in res["current_breakdown_bytes_per_prediction"].items()},
              f"(raw float32 logits: {4 * n_cls})")
        save("bench_parquet", res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
