import pytest
import torch

from coupledsgd.core.errors import ConfigError
from coupledsgd.engine.models import MODELS, build_model, count_parameters
from coupledsgd.engine.units import parameter_units

SHAPES = {"cnn1d": (1, 40), "resnet20": (3, 32, 32), "resnet8": (1, 8, 8), "resnet50": (3, 64, 64),
          "vit": (3, 64, 64)}


def test_resnet20_has_the_parameter_count_of_he_et_al():
    assert count_parameters(build_model("resnet20", (3, 32, 32), 10, seed=0)) == 269_722


def test_cnn1d_is_the_measured_25k_model():
    model = build_model("cnn1d", (1, 40), 10, seed=0)
    assert count_parameters(model) == 25_258
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 5, 1), (32, 3, 2), (64, 3, 2), (64, 3, 2)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_its_input_to_class_logits(name):
    model = build_model(name, SHAPES[name], 7, seed=0)
    assert model(torch.randn(2, *SHAPES[name])).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_units_cover_every_parameter_once_in_forward_order(name):
    model = build_model(name, SHAPES[name], 7, seed=0)
    units = parameter_units(model)
    modules = dict(model.named_modules())
    owned = [id(p) for u in units for m in u for p in modules[m].parameters(recurse=False)]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())
    assert len(owned) == len(set(owned))
    classifier = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert units[-1] == [classifier] or (name == "vit" and units[-1] == ["encoder.ln", classifier])
    stem = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))][0]
    assert stem in units[0] or (name == "vit" and stem in units[1])  # vit: the class token comes first


def test_same_seed_same_weights_and_no_leak_into_the_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("cnn1d", (1, 40), 10, seed=5)
    after = torch.rand(1)
    b = build_model("cnn1d", (1, 40), 10, seed=5)
    c = build_model("cnn1d", (1, 40), 10, seed=6)
    assert torch.equal(before, after)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_unknown_model_names_the_key():
    with pytest.raises(ConfigError, match="model.name"):
        build_model("resnet21", (3, 32, 32), 10, seed=0)


def test_resnet50_stem_is_initialised_like_its_other_convolutions():
    # torchvision: kaiming normal, fan_out, relu, i.e. std sqrt(2 / (64 x 3 x 3)) = 0.059 for the stem
    model = build_model("resnet50", SHAPES["resnet50"], 10, seed=0)
    assert model.conv1.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    # the first bottleneck's 3x3 convolution, initialised by torchvision's own loop, the same way
    assert model.layer1[0].conv2.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


def test_vit_layernorms_join_the_layer_whose_input_they_normalise():
    # pre-norm: ln_1 feeds the attention, ln_2 the MLP's first linear layer, the final norm the head
    units = parameter_units(build_model("vit", SHAPES["vit"], 10, seed=0))
    block = "encoder.layers.encoder_layer_0"
    assert [f"{block}.ln_1", f"{block}.self_attention"] in units
    assert [f"{block}.ln_2", f"{block}.mlp.0"] in units
    assert [f"{block}.mlp.3"] in units and ["encoder"] in units  # the position embedding alone
    assert units[-1] == ["encoder.ln", "heads.head"]
    # a convolution's BatchNorm normalises its output: it still joins the convolution before it
    assert parameter_units(build_model("resnet8", SHAPES["resnet8"], 10, seed=0))[0] == ["conv1", "bn1"]
