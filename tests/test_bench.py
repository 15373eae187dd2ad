"""bench/bench_gpu.py runs where the tests run (the CPU, tiny sizes) and reports every row it promises."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_quick_reports_the_loop_against_the_bare_step(tmp_path):
    out = tmp_path / "bench_gpu.json"
    subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), "--quick", "--device", "cpu", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["full_size"] is False
    rows = {(r["model"], r["k"], r["mode"]): r for r in result["rows"]}
    for model in ("resnet20", "cnn1d"):
        assert {(model, 1, "bare"), (model, 1, "eager"), (model, 2, "eager")} <= set(rows)
    assert all(r["member_images_per_s"] > 0 for r in rows.values())
    assert all(r["of_bare"] == r["member_images_per_s"] / rows[(r["model"], 1, "bare")]["member_images_per_s"]
               for r in rows.values())
