"""bench/bench_gpu.py runs where the tests run (the CPU, tiny sizes) and reports every row it promises."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_tiny_reports_every_route_against_the_bare_step(tmp_path):
    out = tmp_path / "bench_gpu.json"
    subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), "--tiny", "--device", "cpu", "--out", str(out),
                    "--models", "vit", "--jobs-models", "vit", "--jobs", "2"],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["full_size"] is False
    rows = {(r["model"], r["k"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {("vit", 1, "bare"), ("vit", 1, "jobs=2")} | {("vit", k, m) for k in (1, 2)
                                                                     for m in ("eager", "graphs")}
    bare = rows[("vit", 1, "bare")]["member_images_per_s"]
    assert all(r["member_images_per_s"] > 0 and r["of_bare"] == r["member_images_per_s"] / bare for r in rows.values())
    for (_, k, mode), r in rows.items():
        if mode in ("eager", "graphs"):
            # the job's rate: eval_every steps of k x batch images, then one evaluation
            trained = k * r["batch"] * r["eval_every"]
            assert r["eval_s"] > 0 and r["eval_every"] == 8
            assert abs(r["job_images_per_s"] - trained / (trained / r["member_images_per_s"] + r["eval_s"])) < 1e-6
            assert r["job_images_per_s"] < r["member_images_per_s"]


def test_bench_gpu_merges_the_rows_of_one_process_per_model(tmp_path):
    parts = []
    for model in ("resnet50", "vit"):
        parts.append(tmp_path / f"{model}.json")
        parts[-1].write_text(json.dumps({"device": "cuda", "gpu": "Some GPU", "full_size": True,
                                         "rows": [{"model": model, "k": 1, "mode": "eager"}]}))
    out = tmp_path / "bench_gpu.json"
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert bench_gpu.main(["--out", str(out), "--merge", *map(str, parts), str(tmp_path / "not-run.json")]) == 0
    merged = json.loads(out.read_text())
    assert merged["gpu"] == "Some GPU" and [r["model"] for r in merged["rows"]] == ["resnet50", "vit"]
