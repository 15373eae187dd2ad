
import pytest
import torch

from coupledsgd.engine import data as D
from coupledsgd.engine.checkpoints import load_torch, save_torch
from coupledsgd.engine.models import build_model
from coupledsgd.core.seeds import parent_seeds
from coupledsgd.engine.training import SGD, Accel, Hparams, Run, evaluation_steps, learning_rate, predict, train

H = Hparams(steps=40, batch_size=32, lr=0.1)  # 8 steps per epoch on 256 examples


def fresh(data, seeds=None, h=H):
    return Run.fresh("cnn1d", data.in_shape, data.num_classes, h, seeds or parent_seeds(0, 0))


def test_cosine_schedule_with_warmup_and_step_schedule():
    h = Hparams(steps=100, batch_size=1, lr=0.2)
    assert learning_rate(h, 0) == 0.2
    assert learning_rate(h, 50) == pytest.approx(0.1)
    assert learning_rate(h, 100) == pytest.approx(0.0)
    w = Hparams(steps=110, batch_size=1, lr=0.2, warmup_steps=10)
    assert [learning_rate(w, s) for s in (0, 9)] == pytest.approx([0.02, 0.2])
    assert learning_rate(w, 60) == pytest.approx(0.1)
    s = Hparams(steps=100, batch_size=1, lr=0.1, schedule="step", milestones=(50, 75), gamma=0.1)
    assert [learning_rate(s, p) for p in (49, 50, 74, 75)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_step_is_torch_sgd_bit_for_bit(nesterov):
    h = Hparams(steps=10, batch_size=8, lr=0.1, nesterov=nesterov, weight_decay=5e-4)
    ours, ref = (build_model("cnn1d", (1, 40), 10, 0).double() for _ in range(2))
    decay = [p for p in ref.parameters() if p.dim() > 1]
    no_decay = [p for p in ref.parameters() if p.dim() <= 1]
    torch_sgd = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}],
                                lr=0.1, momentum=0.9, nesterov=nesterov)
    opt = SGD(ours, h)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(8, 1, 40, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
        for model, step in ((ours, lambda: opt.step(0.1)), (ref, torch_sgd.step)):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = build_model("cnn1d", (1, 40), 10, 0)
    opt = SGD(model, H)
    for (name, p), wd in zip(model.named_parameters(), opt.decay):
        assert wd == (H.weight_decay if name.endswith("weight") and p.dim() > 1 else 0.0), name


def test_no_weight_decay_on_the_vits_class_token_and_position_embedding():
    model = build_model("vit", (3, 64, 64), 10, 0)
    decay = dict(zip((n for n, _ in model.named_parameters()), SGD(model, H).decay))
    assert decay["class_token"] == decay["encoder.pos_embedding"] == 0.0
    assert decay["conv_proj.weight"] == decay["heads.head.weight"] == H.weight_decay > 0
    assert decay["encoder.layers.encoder_layer_0.self_attention.in_proj_weight"] == H.weight_decay
    assert decay["encoder.ln.weight"] == decay["heads.head.bias"] == 0.0


def test_a_run_continued_from_a_checkpoint_is_bit_for_bit_the_uninterrupted_run(mnist1d_path, tmp_path):
    data = D.load(mnist1d_path, augment=True)
    data.crop_pad, data.flip = 2, True  # exercise the augmentation stream too
    whole = fresh(data)
    train([whole], data, whole.end)
    part = fresh(data)
    train([part], data, 13)  # mid-epoch
    save_torch(part.state_dict(), tmp_path / "step13.pt")
    resumed = Run.from_state(load_torch(tmp_path / "step13.pt"), H)
    assert resumed.step == 13
    train([resumed], data, resumed.end)
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    for a, b in zip(whole.optimizer.buffers, resumed.optimizer.buffers):
        assert torch.equal(a, b)


def test_same_seeds_give_identical_logits_and_other_seeds_do_not(mnist1d_path):
    data = D.load(mnist1d_path)
    runs = [fresh(data), fresh(data), fresh(data, {**parent_seeds(0, 0), "order": 99})]
    logits = []
    for run in runs:
        train([run], data, 16)
        logits.append(predict(run.model, data.x_test))
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])


def test_progress_is_logged_every_epoch_and_test_correctness_recorded(mnist1d_path):
    data = D.load(mnist1d_path)
    run, lines = fresh(data), []
    [trajectory] = train([run], data, run.end, evaluate=True, log=lines.append)
    assert trajectory.steps == [0, 8, 16, 24, 32, 40]
    assert trajectory.as_array().shape == (6, 1000)
    assert len(lines) == 5 and all("loss" in l and "train_acc" in l and "test_acc" in l and "examples/s" in l
                                   for l in lines)
    final_acc = float(lines[-1].split("test_acc ")[1].split()[0])
    assert final_acc == pytest.approx(trajectory.correct[-1].mean(), abs=1e-4)
    assert final_acc > 0.3  # it learns: chance is 0.1


def test_evaluation_points_are_start_every_interval_and_end():
    assert evaluation_steps(6, 606, 15) == [6 + 15 * i for i in range(40)] + [606]
    assert evaluation_steps(0, 600, 15)[-1] == 600 and evaluation_steps(0, 600, 15)[:2] == [0, 15]


def test_the_gpu_path_trains_in_bf16_and_channels_last(tmp_path):
    """The Accel path, exercised on the CPU's bf16 autocast (a GPU runs the same code)."""
    D.prepare("digits", tmp_path / "digits.pt")
    data = D.load(tmp_path / "digits.pt")
    h = Hparams(steps=20, batch_size=32, lr=0.05)
    accel = Accel(bf16=True, channels_last=True)
    run = Run.fresh("resnet8", data.in_shape, data.num_classes, h, parent_seeds(0, 0))
    [trajectory] = train([run], data, run.end, evaluate=True, accel=accel)
    assert run.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert trajectory.final_logits.dtype == torch.float32 and torch.isfinite(trajectory.final_logits).all()
    plain = Run.fresh("resnet8", data.in_shape, data.num_classes, h, parent_seeds(0, 0))
    train([plain], data, plain.end)
    assert not torch.equal(plain.model.fc.weight, run.model.fc.weight)  # bf16 really was used
    assert Accel.for_device("cpu", {"bf16": True, "compile": True}) == Accel()


def test_a_diverging_run_stops_at_the_next_report_naming_run_step_and_rate(mnist1d_path):
    from coupledsgd.core.errors import TrainingDiverged

    data = D.load(mnist1d_path)
    h = Hparams(steps=40, batch_size=32, lr=1e4)
    run = Run.fresh("cnn1d", data.in_shape, data.num_classes, h, parent_seeds(0, 3))
    run.info = {"parent": 3}
    with pytest.raises(TrainingDiverged) as caught:
        train([run], data, run.end, evaluate=True)
    import re

    found = re.match(r"parent 3: the training loss became non-finite by step (\d+) \(learning rate ([\d.e+]+)\); "
                     r"lower training.lr", str(caught.value))
    assert found, str(caught.value)
    step = int(found.group(1))
    # Stopped at a report point (every epoch of 8 steps) before the end, naming the rate of the last step.
    assert run.step == step and step % 8 == 0 and step < run.end
    assert float(found.group(2)) == pytest.approx(learning_rate(h, step - 1), rel=1e-3)
