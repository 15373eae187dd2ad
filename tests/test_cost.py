"""The cost estimate (coupledsgd.cost) against numbers worked out by hand for configs/smoke.yaml."""

from pathlib import Path

import pytest
import yaml

from coupledsgd import cost
from coupledsgd.core.config import SCHEMA, validate
from coupledsgd.engine.training import evaluation_steps

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    return validate(yaml.safe_load((ROOT / name).read_text()), SCHEMA)


def test_smoke_config_by_hand():
    # smoke: T = 24, batch 32, 256 training examples (8 steps per epoch), 1,000 test examples,
    # 2 parents x 2 children, spawn steps {0, 8}, re-initialisation (25%, low and high) at 8.
    e = cost.estimate(load("configs/smoke.yaml"), images_per_second=1000)
    # members: no-coupling, coupled-order (t0); coupled-to-t, reset (t0, t8); reinit-low-25, -high-25 (t8)
    assert e.members == (1 + 1 + 2 + 2 + 1 + 1) * 2 * 2 == 32
    assert e.parent_states == 2 * 2 == 4          # (parent, t) for t in {0, 8}
    assert e.parent_steps == 2 * (0 + 8) == 16    # each parent state trains from 0 to t
    # steps each member runs: T for no-coupling, coupled-order and the two t0 conditions (16 members);
    # T - t = 16 for coupled-to-t at 8 (4 members); T = 24 after the spawn for the reset and the
    # re-initialised children at 8 (12 members)
    assert e.member_steps == 16 * 24 + 4 * 16 + 12 * 24 == 736
    assert e.steps == 752 and e.trainings == 36
    assert e.train_images == 752 * 32 == 24064
    # evaluations: first step, each epoch after it, last step. From 0 to 24: 0, 8, 16, 24 (4 points,
    # 16 members); coupled-to-t from 8 to 24: 8, 16, 24 (3 points, 4 members); reset and
    # re-initialised from 8 to 32: 8, 16, 24, 32 (4 points, 12 members)
    assert e.eval_images == (16 * 4 + 4 * 3 + 12 * 4) * 1000 == 124000
    # barriers: reset, reinit-low-25, reinit-high-25 at t = 8; the instability analysis: no-coupling,
    # coupled-to-t at 0 and 8, the reset at 0 (at 8 already measured); 2 parents: 14 jobs of 1 child
    # pair; 11 points, each 10 BatchNorm batches of 32 and the 1,000 test examples
    assert e.barrier_jobs == (3 + 4) * 2 == 14
    assert e.barrier_images == 14 * 1 * 11 * (10 * 32 + 1000) == 203280
    assert e.images == 24064 + 124000 + 203280
    # (24,064 training images + 327,280 forward-only at a third) / 1,000 per second
    assert e.hours == pytest.approx((24064 + 327280 / 3) / 1000 / 3600)
    assert e.hours == pytest.approx(0.0369881, rel=1e-5)
    # checkpoints: 32 final states and 4 parent states of the 25,258-parameter cnn1d, weights and momentum
    assert e.parameters == 25258
    assert e.checkpoint_bytes == 36 * 2 * 4 * 25258 == 7274304


def test_evaluation_points_match_the_training_loop():
    for start, end, every in [(0, 24, 8), (8, 24, 8), (8, 32, 8), (431, 64431, 390), (0, 5, 7)]:
        assert cost.evaluation_points(start, end, every) == len(evaluation_steps(start, end, every))


def test_member_spans():
    config = load("configs/smoke.yaml")
    assert cost.member_span(config, "no-coupling", 0) == (0, 24)
    assert cost.member_span(config, "coupled-order", 0) == (0, 24)
    assert cost.member_span(config, "coupled-to-t", 8) == (8, 24)
    assert cost.member_span(config, "coupled-to-t-reset", 8) == (8, 32)
    assert cost.member_span(config, "reinit-high-25", 8) == (8, 32)


def test_default_rates_say_whether_measured_or_assumed():
    smoke = cost.estimate(load("configs/smoke.yaml"))
    assert smoke.images_per_second == 13000 and smoke.rate_source.startswith("measured")
    paper = cost.estimate(load("configs/cifar10-resnet20.yaml"), bench=Path("no-such-file.json"))
    assert paper.images_per_second == 11560 and paper.rate_source.startswith("measured")
    assert all(source.split(":")[0] in ("measured", "assumed") for _, source in cost.IMAGES_PER_SECOND.values())


def test_cifar10_grid_by_hand():
    e = cost.estimate(load("configs/cifar10-resnet20.yaml"), images_per_second=10000)
    # conditions: no-coupling, coupled-order, 7 x coupled-to-t, 7 x reset, 6 x low, 6 x high = 28
    assert e.members == 28 * 3 * 5 == 420
    assert e.parent_states == 3 * 7 == 21
    assert e.parent_steps == 3 * (0 + 431 + 878 + 1254 + 1791 + 2558 + 3654)
    steps = [0, 431, 878, 1254, 1791, 2558, 3654]
    per_parent_child = 2 * 64000 + sum(64000 - t for t in steps) + 7 * 64000 + 12 * 64000
    assert e.member_steps == per_parent_child * 15


def test_cli_prints_the_counts(capsys):
    assert cost.main([str(ROOT / "configs/smoke.yaml"), "--images-per-second", "1000"]) == 0
    out = capsys.readouterr().out
    assert "trainings: 36 (32 members + 4 parent states), and 14 barrier jobs" in out
    assert "SGD steps: 752 (members 736, parent states 16)" in out
    assert "images: 351,344 (24,064 trained on" in out
    assert "CPU-hours: 0.037 at 1,000 member training images/s (given)" in out
    assert "disk: about 7.3 MB of checkpoints (36 states of 25,258 parameters" in out


def test_cli_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    config["spawn_steps"] = [0, 99]
    bad.write_text(yaml.safe_dump(config))
    assert cost.main([str(bad), "--schema", str(SCHEMA)]) == 1
    assert "spawn_steps: spawn step 99" in capsys.readouterr().err


def test_gpu_rates_come_from_the_bench_at_the_jobs_member_count(tmp_path):
    import json

    bench = tmp_path / "bench_gpu.json"
    rows = [{"model": "resnet20", "k": k, "mode": mode, "member_images_per_s": rate}
            for k, mode, rate in [(1, "eager", 1000), (5, "eager", 5000), (15, "eager", 9000), (15, "graphs", 20000)]]
    bench.write_text(json.dumps({"device": "cuda", "gpu": "Some GPU", "full_size": True, "rows": rows}))
    config = load("configs/cifar10-resnet20.yaml")   # job_shape auto on cuda: 3 parents x 5 children a job
    e = cost.estimate(config, bench=bench)
    assert e.images_per_second == 9000 and e.rate_source.startswith("measured") and "k=15 eager" in e.rate_source
    config["cuda"]["graphs"] = True
    assert cost.estimate(config, bench=bench).images_per_second == 20000
    config["cuda"]["graphs"] = False
    # A projection runs the members at the jobs' rate, parent states and barriers (one network a job) at k = 1.
    rates = {c.kind: c.rate for c in cost.run_cost(config, tmp_path / "results", bench=bench)}
    assert rates == {"train_members": 9000, "parent_state": 1000, "barrier": 1000}  # forward images count 1/3
    config["job_shape"] = "member"
    assert cost.estimate(config, bench=bench).images_per_second == 1000
    # A CPU-sized bench result is no measure of a GPU run.
    bench.write_text(json.dumps({"device": "cpu", "gpu": "none", "full_size": False, "rows": rows}))
    assert cost.estimate(config, bench=bench).rate_source == cost.IMAGES_PER_SECOND[("cuda", "resnet20")][1]
    config["job_shape"] = "auto"
    assert "jobs here train 15 members as one network" in cost.estimate(config, bench=bench).rate_source


# ---- spent and projected, from benchmark files ---------------------------------------------------------

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench_file(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{seconds}\t0:00:{seconds:02.0f}\t100\t200\t90\t95\t0\t1\t98.0\t{seconds}\n")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_spent_and_projection_from_hand_written_benchmarks(tmp_path):
    config = load("configs/smoke.yaml")  # cnn1d: job_shape condition, one job of 4 members per (condition, t)
    exp = tmp_path / "smoke"
    # no-coupling t0 finished in 10 s: 4 members x 24 steps x batch 32 = 3,072 training images, and
    # 4 members x 4 evaluations (steps 0, 8, 16, 24) x 1,000 test images = 16,000 forward-only images at
    # a third: 8,405.33 training images in 10 s
    for p in (0, 1):
        for c in (0, 1):
            touch(exp / f"predictions/no-coupling/t0/p{p}/c{c}.parquet")
    bench_file(exp / "benchmarks/train_members/no-coupling/t0/members.tsv", 10)
    # parent p0 at t = 0 finished in 2 s, training nothing; a benchmark of an unfinished job is ignored
    touch(exp / "parents/p0/step0.pt")
    bench_file(exp / "benchmarks/parent_state/p0/step0.tsv", 2)
    bench_file(exp / "benchmarks/barrier/reinit-low-25/t8/p0.tsv", 99)
    costs = {c.kind: c for c in cost.run_cost(config, tmp_path, images_per_second=1000)}

    train = costs["train_members"]
    assert (train.jobs, train.done, train.measured, train.seconds, train.images, train.forward) == (
        8, 1, 1, 10.0, 3072, 16000)
    assert train.rate == pytest.approx(840.5333) and train.rate_source.startswith("measured")
    # left: 736 member-steps in all (test_smoke_config_by_hand) - 96 done = 640, x 32 = 20,480 training
    # images; 124,000 evaluation images in all - 16,000 done = 108,000 forward only
    assert train.left_jobs == 7 and (train.left_images, train.left_forward) == (20480, 108000)
    assert train.left_seconds == pytest.approx((20480 + 108000 / 3) / 840.5333)

    parents = costs["parent_state"]
    assert (parents.jobs, parents.done, parents.measured, parents.seconds, parents.images) == (4, 1, 1, 2.0, 0)
    # nothing trained yet: the 3 parent jobs left cost what the measured one did, 2 s each
    assert parents.rate is None and parents.left_jobs == 3 and parents.left_seconds == pytest.approx(6.0)

    barrier = costs["barrier"]
    assert barrier.measured == 0 and barrier.rate_source.startswith("assumed")
    # 14 jobs x 1 pair x 11 points x (10 x 32 + 1,000) = 203,280 forward images at 3 x 1,000 per second
    assert (barrier.left_images, barrier.left_forward) == (0, 203280) and barrier.left_seconds == pytest.approx(67.76)

    text = cost.run_report(config, list(costs.values()), tmp_path)
    assert "spent so far" in text and "12 s" not in text
    assert f"{12 / 3600:.3g} CPU-hours" in text                          # 10 s + 2 s, 1 thread per job
    assert f"{(12 + (20480 + 36000) / 840.5333 + 6 + 67.76) / 3600:.3g} in all" in text
    assert "841 images/s" in text


def test_benchmark_seconds_reads_column_s(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text("h:m:s\ts\tmax_rss\n0:00:03\t3.5\t1\n0:00:04\t4.5\t1\n")
    assert cost.benchmark_seconds(path) == pytest.approx(4.0)  # mean over repeats
    assert cost.benchmark_seconds(tmp_path / "missing.tsv") is None


def test_member_spans_agree_with_the_conditions():
    from coupledsgd.core.grid import conditions
    from coupledsgd.core.conditions import parse_condition

    config = load("config.yaml")
    for name in conditions(config):
        c = parse_condition(name)
        assert cost.member_span(config, name, 30) == ((30, 30 + 600) if c.resets else (30, 600)) if c.has_parent \
            else cost.member_span(config, name, 30) == (0, 600)


def test_a_training_job_asks_for_its_dataset_and_the_normalised_copy():
    from coupledsgd.work import job_memory_mb

    # CIFAR-10: 60,000 uint8 images of 3 x 32 x 32 and their float32 copy, 5 bytes an element
    assert job_memory_mb(load("configs/cifar10-resnet20.yaml")) == 1000 + 879  # 921,600,000 B = 878.9 MB
    # MNIST-1D, 1,000 + 1,000 float32 signals of 1 x 40: 8 bytes an element, 640,000 B
    assert job_memory_mb(load("config.yaml")) == 1000 + 1
    synthetic = load("configs/tinyimagenet-resnet50.yaml")
    synthetic["data"] = {**synthetic["data"], "name": "synthetic", "like": "tinyimagenet", "n_train": 1000,
                         "n_test": 1000, "root": None}
    assert job_memory_mb(synthetic) == 1000 + 118  # 2,000 x 12,288 x 5 = 122,880,000 B = 117.2 MB


@pytest.mark.parametrize("name", ["configs/cifar10-resnet20.yaml", "configs/tinyimagenet-resnet50.yaml",
                                  "configs/tinyimagenet-vit.yaml", "configs/smoke.yaml"])
def test_one_total_per_quantity_before_a_run(name, tmp_path, capsys):
    # Before any job has run, the estimate and the projection of what is left count the same work at the
    # same rates: one number of device-hours and of images, evaluation images included.
    assert cost.main([str(ROOT / name), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    hours = out.split("-hours: ")[1].split(" at ")[0]
    assert f"more, {hours} in all" in out, out
    config = load(name)
    e, costs = cost.estimate(config), cost.run_cost(config, tmp_path)
    assert sum(c.left_seconds for c in costs) == pytest.approx(e.seconds, rel=1e-12)
    assert sum(c.left_images + c.left_forward for c in costs) == e.images
    assert sum(c.left_forward for c in costs) == e.forward_images


def test_the_estimate_runs_each_job_kind_at_its_own_rate(tmp_path):
    import json

    bench = tmp_path / "bench_gpu.json"
    rows = [{"model": "resnet20", "k": k, "mode": "eager", "member_images_per_s": rate} for k, rate in [(1, 1000), (15, 9000)]]
    bench.write_text(json.dumps({"device": "cuda", "gpu": "Some GPU", "full_size": True, "rows": rows}))
    e = cost.estimate(load("configs/cifar10-resnet20.yaml"), bench=bench)
    members = (e.member_steps * 128 + e.eval_images / 3) / 9000
    others = (e.parent_steps * 128 + e.barrier_images / 3) / 1000
    assert e.seconds == pytest.approx(members + others, rel=1e-12)
    assert "parent states and barrier jobs (one network a job) at 1,000" in cost.report(load("configs/cifar10-resnet20.yaml"), e)
