import pytest
import torch

from coupledsgd.engine import data as D
from coupledsgd.core.errors import ConfigError, DataError
from fixtures import trust_fake_cifar10, write_fake_cifar10, write_fake_tinyimagenet


def test_a_batch_is_a_pure_function_of_seed_and_step():
    a = [D.batch_indices(7, s, 100, 10) for s in range(25)]
    b = [D.batch_indices(7, s, 100, 10) for s in reversed(range(25))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(D.batch_indices(8, 3, 100, 10), a[3])


def test_each_epoch_visits_every_example_once_and_epochs_differ():
    epoch0 = torch.cat([D.batch_indices(7, s, 100, 10) for s in range(10)])
    epoch1 = torch.cat([D.batch_indices(7, s, 100, 10) for s in range(10, 20)])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)


def test_last_partial_batch_is_dropped():
    assert D.steps_per_epoch(105, 10) == 10
    assert sorted(torch.cat([D.batch_indices(1, s, 105, 10) for s in range(10)]).tolist()) != list(range(105))


def test_crop_moves_the_image_by_the_drawn_shift_and_pads_with_zeros():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = D.augment(x, aug_seed=3, step=0, crop_pad=2, flip=False)
    assert out.shape == x.shape
    g = D.step_generator(3, 0)
    shifts = torch.randint(0, 5, (2, 2), generator=g)
    for i in range(2):
        dy, dx = (shifts[i] - 2).tolist()
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert torch.equal(out[i], padded[:, 2 + dy:7 + dy, 2 + dx:7 + dx])


def test_crop_and_flip_on_signals_and_images_are_deterministic_per_step():
    x = torch.randn(16, 3, 8, 8)
    a = D.augment(x, 5, 10, crop_pad=2, flip=True)
    assert torch.equal(a, D.augment(x, 5, 10, crop_pad=2, flip=True))
    assert not torch.equal(a, D.augment(x, 5, 11, crop_pad=2, flip=True))
    flipped = D.augment(x, 5, 10, crop_pad=0, flip=True)
    n_flipped = sum(torch.equal(flipped[i], x[i].flip(-1)) for i in range(16))
    assert 0 < n_flipped < 16 and all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
                                      for i in range(16))
    s = torch.randn(4, 1, 40)
    out = D.augment(s, 5, 0, crop_pad=3, flip=False)
    assert out.shape == s.shape and not torch.equal(out, s)
    assert D.augment(s, 5, 0, crop_pad=0, flip=False) is s


def test_mnist1d_is_generated_offline_and_cached_normalised(mnist1d_path):
    data = D.load(mnist1d_path)
    assert data.x_train.shape == (256, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.num_classes == 10 and data.crop_pad == 0 and not data.flip
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-2
    again = D.load(mnist1d_path)
    assert torch.equal(again.x_test, data.x_test)


def test_digits_split_is_fixed_and_stratified(tmp_path):
    cache = D.prepare("digits", tmp_path / "digits.pt")
    assert cache["x_train"].shape == (1347, 1, 8, 8) and cache["x_test"].shape == (450, 1, 8, 8)
    assert cache["x_train"].dtype == torch.uint8
    test = torch.bincount(cache["y_test"], minlength=10)
    total = test + torch.bincount(cache["y_train"], minlength=10)
    assert (test - total * 450 / 1797).abs().max() <= 1  # each class in proportion
    again = D.prepare("digits", tmp_path / "digits2.pt")
    assert torch.equal(again["y_test"], cache["y_test"])
    data = D.load(tmp_path / "digits.pt")
    assert data.crop_pad == 1 and not data.flip


def test_cifar10_is_read_from_its_real_layout(tmp_path, monkeypatch):
    written = write_fake_cifar10(tmp_path, n_train=50, n_test=20)
    trust_fake_cifar10(monkeypatch, written["md5"])
    cache = D.prepare("cifar10", tmp_path / "c.pt", root=str(tmp_path), n_train=40)
    assert cache["x_train"].shape == (40, 3, 32, 32) and cache["x_test"].shape == (20, 3, 32, 32)
    data = D.load(tmp_path / "c.pt")
    assert data.crop_pad == 4 and data.flip and data.in_shape == (3, 32, 32)


def test_tinyimagenet_is_read_from_its_real_layout(tmp_path):
    write_fake_tinyimagenet(tmp_path, n_classes=3, n_train_per_class=4, n_val=6)
    cache = D.prepare("tinyimagenet", tmp_path / "t.pt", root=str(tmp_path))
    assert cache["x_train"].shape == (12, 3, 64, 64) and cache["num_classes"] == 3


def test_bad_dataset_settings_name_the_key_or_folder(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        D.prepare("cifar10", tmp_path / "c.pt")
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        D.prepare("cifar10", tmp_path / "c.pt", root=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="data.n_train"):
        D.prepare("digits", tmp_path / "d.pt", n_train=10_000)
    with pytest.raises(ConfigError, match="data.name"):
        D.prepare("mnist", tmp_path / "m.pt")
    assert not any(tmp_path.glob("*.pt"))


def test_random_crop_pads_with_black_as_torchvision_pads_the_raw_image():
    # the standard recipe: pad the raw image with zeros (fill=0), crop, then normalise
    import torchvision.transforms.functional as TF

    raw = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])
    norm = TF.normalize(raw, mean.tolist(), std.tolist())
    out = D.augment(norm, aug_seed=3, step=0, crop_pad=2, flip=False, pad_value=-mean / std)
    shifts = torch.randint(0, 5, (3, 2), generator=D.step_generator(3, 0))
    for i in range(3):
        top, left = shifts[i].tolist()
        expected = TF.normalize(TF.crop(TF.pad(raw[i], 2, fill=0), top, left, 5, 5), mean.tolist(), std.tolist())
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)
    assert (out != 0).all()  # a black border is not the mean colour (0 after normalising)


def test_load_pads_with_each_channels_normalised_zero(mnist1d_path):
    data = D.load(mnist1d_path)
    cache = torch.load(mnist1d_path, weights_only=False)
    torch.testing.assert_close(data.pad_value, (-cache["mean"] / cache["std"]).flatten())
