"""Contracts of the model registry, backbones and the three models."""

from __future__ import annotations

import io
import itertools
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.resnet import BasicBlock, ResNet

from thoracic.config import ConfigError, ModelConfig, load_config, load_config_by_name
from thoracic.errors import ThoracicError, WeightsUnavailableError
from thoracic.models import (
    AttentionGated,
    BaselineCAM,
    ModelOutput,
    build_model,
    check_model_config,
    create_backbone,
    create_model,
    list_backbones,
    list_models,
    model_options,
)
from thoracic.models import backbones as backbones_module
from thoracic.models.ops import lse_pool, minmax_normalize, resize_maps
from thoracic.workflows.demo_settings import DEMO_MODEL_OVERRIDES, DEMO_OVERRIDES

MODELS = ("baseline", "space_attention", "attention_gated")


def _images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _total_loss(output: ModelOutput) -> torch.Tensor:
    loss = output.logits.sum()
    for aux in output.aux_logits:
        loss = loss + aux.sum()
    return loss


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_lists_the_three_models() -> None:
    assert list_models() == sorted(MODELS)
    assert set(list_backbones()) >= {"resnet10", "resnet18", "resnet34", "resnet50", "densenet121"}


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ThoracicError) as info:
        create_model("resnet_attention")
    assert isinstance(info.value, ValueError)
    for name in MODELS:
        assert name in str(info.value)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ThoracicError, match="resnet34") as info:
        create_model("baseline", backbone="vgg16")
    assert "vgg16" in str(info.value)


def test_build_model_passes_the_relevant_config_fields() -> None:
    base = dict(backbone="resnet10", pretrained=False)
    baseline = build_model(ModelConfig(name="baseline", pooling="lse", lse_r=5.0, transition_channels=32, **base))
    assert isinstance(baseline, BaselineCAM)
    assert (baseline.pooling, baseline.lse_r, baseline.transition.out_channels) == ("lse", 5.0, 32)
    assert build_model(ModelConfig(name="space_attention", num_classes=3, **base)).num_classes == 3
    gated = build_model(
        ModelConfig(
            name="attention_gated", gating="grid", attention_normalization="softmax",
            aggregation="deep_supervision", freeze_backbone=True, **base,
        )
    )
    assert isinstance(gated, AttentionGated)
    assert (gated.gates["layer2"].gating, gated.attention_normalization, gated.aggregation) == (
        "grid", "softmax", "deep_supervision",
    )
    assert gated.attention_pooling == "sum"  # auto: sum for softmax attention
    assert all(not p.requires_grad for p in gated.backbone.parameters())


@pytest.mark.parametrize(("name", "override", "value"), [
    ("attention_gated", "pooling", "avg"), ("space_attention", "gating", "grid"),
    ("baseline", "aggregation", "mean"), ("space_attention", "transition_channels", 32),
])
def test_an_option_the_model_does_not_take_is_an_error_naming_it(name, override, value) -> None:
    cfg = ModelConfig(name=name, backbone="resnet10", pretrained=False, **{override: value})
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
    message = str(info.value)
    assert f"model.{override}={value!r}" in message and f"model {name!r} does not take this option" in message
    taken = message.split("it takes ", 1)[1].split(", ")
    assert taken == [f"model.{option}" for option in model_options(name)] and f"model.{override}" not in taken
    # a checkpoint's stored config (written before options were checked) still builds, without the option
    assert type(build_model(cfg, strict=False)) is type(build_model(ModelConfig(name=name, backbone="resnet10",
                                                                             pretrained=False)))


def test_model_options_follow_each_constructor() -> None:
    assert "pooling" in model_options("baseline") and "pooling" not in model_options("attention_gated")
    assert {"gating", "aggregation", "attention_pooling"} <= set(model_options("attention_gated"))
    assert set(model_options("space_attention")) == {"backbone", "pretrained", "weights", "freeze_backbone",
                                                     "num_classes", "output_stride"}
    cfg = ModelConfig(name="attention_gated", pooling="avg", gating="global", lse_r=3.0)
    with pytest.raises(ConfigError, match=r"model.pooling='avg', model.lse_r=3.0: .* these options"):
        check_model_config(cfg)


def test_packaged_configs_and_demo_overrides_pass_the_option_check() -> None:
    repository = Path(__file__).resolve().parents[1] / "configs"
    for name in MODELS:
        for cfg in (load_config_by_name(name), load_config(repository / f"{name}.yaml")):
            check_model_config(cfg.model)  # other models' options only at their defaults
        overrides = {**DEMO_OVERRIDES, **DEMO_MODEL_OVERRIDES.get(name, {})}
        demo = load_config_by_name(name, overrides)
        check_model_config(demo.model)
        assert build_model(demo.model).num_classes == 14
    # the demo's per-model override applied to another model would now be refused
    with pytest.raises(ConfigError, match="model.aggregation='mean'"):
        check_model_config(load_config_by_name("baseline", DEMO_MODEL_OVERRIDES["attention_gated"]).model)


# --------------------------------------------------------------------------------------------------
# Every model x backbone: shapes, finiteness, gradients
# --------------------------------------------------------------------------------------------------

#: Every registered model x every registered backbone, at 32 px and batch 2: the
#: smallest input every backbone accepts (final map 1x1, layer2 4x4) keeps the 15 pairs fast.
PAIRS = list(itertools.product(list_models(), list_backbones()))
PAIR_SIZE = 32


def _expected_map_size(name: str, size: int) -> int:
    # The baseline and space attention map at stride 32; the attention-gated map at layer2's stride 8.
    return size // 8 if name == "attention_gated" else size // 32


def test_pairs_cover_every_registered_model_and_backbone() -> None:
    assert len(PAIRS) == len(MODELS) * len(list_backbones()) >= 15
    assert {"resnet34", "resnet50", "densenet121"} <= {backbone for _, backbone in PAIRS}


@pytest.mark.parametrize(("name", "backbone"), PAIRS)
def test_forward_shapes_finite_and_every_parameter_gets_a_gradient(name: str, backbone: str) -> None:
    torch.manual_seed(0)
    size = PAIR_SIZE
    model = create_model(name, backbone=backbone, pretrained=False)
    model.train()
    output = model(_images(2, size), return_maps=True)
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (2, 14)
    side = _expected_map_size(name, size)
    assert output.class_maps.shape == (2, 14, side, side)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.class_maps).all()
    if name == "attention_gated":
        expected = [(2, 1, size // 8, size // 8), (2, 1, size // 16, size // 16)]
        assert [tuple(a.shape) for a in output.attention] == expected
        assert all(torch.isfinite(a).all() for a in output.attention)
    else:
        assert output.attention == () and output.aux_logits == ()
    with torch.no_grad():
        assert model(_images(2, size)).class_maps is None  # maps only when asked

    _total_loss(output).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    without = [n for n, p in trainable if p.grad is None]
    assert not without, f"parameters without gradient: {without[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert model.num_classes == 14
    assert model.target_layer is model.backbone.layer4


AG_VARIANTS = [
    ("global", "sigmoid", "concat"),
    ("grid", "sigmoid", "mean"),
    ("global", "softmax", "deep_supervision"),
    ("grid", "softmax", "concat"),
]


@pytest.mark.parametrize(("gating", "normalization", "aggregation"), AG_VARIANTS)
def test_attention_gated_variants_train_every_head(gating: str, normalization: str, aggregation: str) -> None:
    torch.manual_seed(0)
    model = create_model(
        "attention_gated", backbone="resnet10", gating=gating,
        attention_normalization=normalization, aggregation=aggregation,
    )
    output = model(_images(2, 64), return_maps=True)
    assert output.logits.shape == (2, 14)
    assert len(output.aux_logits) == (3 if aggregation == "deep_supervision" else 0)
    for attention in output.attention:
        assert torch.isfinite(attention).all()
        if normalization == "softmax":
            torch.testing.assert_close(attention.flatten(1).sum(1), torch.ones(2))
        else:
            assert ((attention >= 0) & (attention <= 1)).all()
    _total_loss(output).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", MODELS)
def test_any_input_size(name: str) -> None:
    """Square and non-square inputs: maps cover the input at the model's stride, every image of a batch
    is scored on its own, the maps do not change the logits, and the logits follow from the maps."""
    torch.manual_seed(0)
    kwargs = {"pooling": "avg"} if name == "baseline" else {}
    model = create_model(name, backbone="resnet10", **kwargs).eval()
    stride = 8 if name == "attention_gated" else 32
    with torch.no_grad():
        for height, width in ((32, 32), (96, 64), (64, 160)):
            images = _images(2, max(height, width))[:, :, :height, :width]
            output = model(images, return_maps=True)
            assert output.logits.shape == (2, 14)
            assert output.class_maps.shape == (2, 14, height // stride, width // stride)
            assert torch.isfinite(output.class_maps).all()
            torch.testing.assert_close(model(images).logits, output.logits, rtol=0, atol=0)
            alone = model(images[1:], return_maps=True)
            torch.testing.assert_close(alone.logits, output.logits[1:], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(alone.class_maps, output.class_maps[1:], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(output.logits[0], output.logits[1])  # the input matters
            if name == "baseline":  # average pooling: logit = CAM mean + bias (Zhou et al. 2016)
                expected = output.class_maps.mean(dim=(2, 3)) + model.classifier.bias
            elif name == "space_attention":  # logits are the spatial means of the class maps
                expected = output.class_maps.mean(dim=(2, 3))
            else:  # the combined map of min-max-normalised maps: a heatmap in [0, 1], not a logit source
                assert output.class_maps.min() >= 0 and output.class_maps.max() <= 1
                assert [tuple(a.shape[-2:]) for a in output.attention] == [
                    (height // 8, width // 8), (height // 16, width // 16)]
                continue
            torch.testing.assert_close(output.logits, expected, rtol=1e-4, atol=1e-5)


def test_documented_map_sizes_at_256_px_with_resnet34() -> None:
    images = _images(1, 256)
    with torch.no_grad():
        for name in MODELS:
            output = create_model(name, backbone="resnet34").eval()(images, return_maps=True)
            if name == "attention_gated":
                assert output.class_maps.shape == (1, 14, 32, 32)
                assert [tuple(a.shape[-2:]) for a in output.attention] == [(32, 32), (16, 16)]
            else:
                assert output.class_maps.shape == (1, 14, 8, 8)


# --------------------------------------------------------------------------------------------------
# Frozen backbone, save / reload
# --------------------------------------------------------------------------------------------------


def _batchnorm_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for key, value in (
            ("running_mean", m.running_mean), ("running_var", m.running_var),
            ("num_batches_tracked", m.num_batches_tracked),
        )
    }


@pytest.mark.parametrize(("name", "backbone"), PAIRS)
def test_frozen_backbone_gets_no_gradient_and_keeps_batchnorm_statistics(name: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, backbone=backbone, pretrained=False, freeze_backbone=True)
    model.eval().train()  # the frozen backbone's BatchNorm stays in eval mode through mode switches
    assert all(not p.requires_grad for p in model.backbone.parameters())
    batchnorms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert batchnorms and all(not m.training for m in batchnorms)
    before = _batchnorm_state(model.backbone)
    _total_loss(model(_images(2, PAIR_SIZE), return_maps=True)).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert head and all(p.requires_grad and p.grad is not None for p in head)
    after = _batchnorm_state(model.backbone)
    assert after.keys() == before.keys()
    for key, old in before.items():
        torch.testing.assert_close(after[key], old, rtol=0, atol=0, msg=f"{key} changed")


@pytest.mark.parametrize("name", MODELS)
def test_saved_and_reloaded_model_gives_identical_outputs(name: str) -> None:
    kwargs: dict = {"backbone": "resnet10"}
    if name == "attention_gated":
        kwargs["aggregation"] = "deep_supervision"
    torch.manual_seed(1)
    model = create_model(name, **kwargs).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)  # different initialisation, overwritten by the loaded weights
    reloaded = create_model(name, **kwargs)
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    reloaded.eval()
    images = _images(2, 64)
    with torch.no_grad():
        first, second = model(images, return_maps=True), reloaded(images, return_maps=True)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    torch.testing.assert_close(first.class_maps, second.class_maps, rtol=0, atol=0)
    for a, b in zip(first.attention + first.aux_logits, second.attention + second.aux_logits):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# The maps are what the docs say
# --------------------------------------------------------------------------------------------------


def test_baseline_cam_equals_weights_times_transition_features() -> None:
    torch.manual_seed(0)
    model = create_model("baseline", backbone="resnet10", pooling="avg", transition_channels=16).eval()
    images = _images(2, 96)
    with torch.no_grad():
        output = model(images, return_maps=True)
        features = model.transition(model.backbone(images)["final"])  # (2, 16, 3, 3)
    weights = model.classifier.weight
    expected = torch.zeros(2, 14, 3, 3)
    for b in range(2):
        for k in range(14):
            for c in range(16):
                expected[b, k] += weights[k, c] * features[b, c]
    torch.testing.assert_close(output.class_maps, expected, rtol=1e-5, atol=1e-5)
    # With average pooling, a class's logit is its CAM's spatial mean plus the bias (Zhou et al. 2016).
    torch.testing.assert_close(output.logits, expected.mean(dim=(2, 3)) + model.classifier.bias, rtol=1e-5, atol=1e-5)


def test_baseline_pooling_modes() -> None:
    torch.manual_seed(0)
    model = create_model("baseline", backbone="resnet10").eval()
    features = torch.randn(2, 512, 3, 3)
    torch.testing.assert_close(model.pool(features), features.amax(dim=(2, 3)))
    x = torch.tensor([0.0, torch.log(torch.tensor(3.0)).item()]).view(1, 1, 1, 2)
    # (1/r) log(mean(exp(r x))) with r = 1: log((1 + 3) / 2) = log 2.
    torch.testing.assert_close(lse_pool(x, 1.0), torch.log(torch.tensor([[2.0]])))
    torch.testing.assert_close(lse_pool(features, 1e4), features.amax(dim=(2, 3)), atol=1e-3, rtol=0)
    # Small r: mean + (r / 2) variance + ...; float64 because (lse - log n) / r amplifies rounding.
    torch.testing.assert_close(lse_pool(features.double(), 1e-4), features.double().mean(dim=(2, 3)), atol=1e-3, rtol=0)
    assert torch.isfinite(lse_pool(features * 1e3, 10.0)).all()


def test_space_attention_class_maps_are_the_conv_of_features_and_global_context() -> None:
    torch.manual_seed(0)
    model = create_model("space_attention", backbone="resnet10").eval()
    images = _images(2, 96)
    with torch.no_grad():
        output = model(images, return_maps=True)
        features = model.backbone(images)["final"]
    weight = model.classifier.weight[:, :, 0, 0]  # (14, 1024): local half then global half
    local, context = weight[:, :512], weight[:, 512:]
    expected = (
        torch.einsum("kc,bchw->bkhw", local, features)
        + torch.einsum("kc,bc->bk", context, features.mean(dim=(2, 3)))[:, :, None, None]
        + model.classifier.bias[None, :, None, None]
    )
    torch.testing.assert_close(output.class_maps, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.logits, output.class_maps.mean(dim=(2, 3)))


@pytest.mark.parametrize("aggregation", ["concat", "mean"])
def test_attention_gated_map_is_the_mean_of_three_normalised_maps(aggregation: str) -> None:
    torch.manual_seed(0)
    model = create_model("attention_gated", backbone="resnet10", aggregation=aggregation).eval()
    images = _images(2, 128)
    with torch.no_grad():
        output = model(images, return_maps=True)
        final = model.backbone(images)["final"]
    head = model.heads[2].weight if aggregation == "mean" else model.classifier.weight[:, 128 + 256:]
    cam = torch.einsum("kc,bchw->bkhw", head, final)
    first, second = output.attention

    def registered(maps: torch.Tensor, stride: int) -> torch.Tensor:
        # layer2 cell j (stride 8, offset 0) sits at input pixel 8 j, i.e. at cell 8 j / stride of a
        # coarser level: separable linear interpolation there, constant beyond the last centre
        position = np.arange(16) * 8 / stride
        cells = np.arange(maps.shape[-1])
        data = maps.detach().double().numpy()
        rows = np.apply_along_axis(lambda v: np.interp(position, cells, v), -2, data)
        both = np.apply_along_axis(lambda v: np.interp(position, cells, v), -1, rows)
        return torch.from_numpy(both).float()

    expected = (minmax_normalize(first) + registered(minmax_normalize(second), 16)
                + registered(minmax_normalize(cam), 32)) / 3
    torch.testing.assert_close(output.class_maps, expected, rtol=1e-5, atol=1e-5)
    # the coarser levels are not placed by align_corners=False resizing (a quarter-cell shift)
    legacy = (minmax_normalize(first) + resize_maps(minmax_normalize(second), (16, 16))
              + resize_maps(minmax_normalize(cam), (16, 16))) / 3
    assert (output.class_maps - legacy).abs().max() > 1e-3
    assert output.class_maps.min() >= 0 and output.class_maps.max() <= 1


def test_minmax_normalize_constant_map_gives_zeros() -> None:
    maps = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    normalized = minmax_normalize(maps)
    assert torch.equal(normalized[0], torch.zeros(4, 4))
    assert normalized[1].min() == 0 and normalized[1].max() == 1


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def test_resnet10_has_no_imagenet_weights() -> None:
    with pytest.raises(WeightsUnavailableError, match="pretrained: false"):
        create_backbone("resnet10", pretrained=True)


def test_offline_without_cache_names_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url: str) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(backbones_module, "_download_state_dict", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("baseline", backbone="resnet18", pretrained=True)
    message = str(info.value)
    assert "model.weights" in message and str(tmp_path) in message and "resnet18" in message


def test_pretrained_weights_are_read_from_the_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(backbones_module, "_download_state_dict", lambda url: pytest.fail("must not download"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), cached)
    backbone = create_backbone("resnet18", pretrained=True)
    torch.testing.assert_close(backbone.stem[0].weight, reference.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var, rtol=0, atol=0)


def test_local_weights_file_is_loaded_and_fc_ignored(tmp_path: Path) -> None:
    torch.manual_seed(4)
    reference = ResNet(BasicBlock, [1, 1, 1, 1])
    path = tmp_path / "resnet10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = create_model("baseline", backbone="resnet10", weights=str(path))
    torch.testing.assert_close(model.backbone.layer3[0].conv2.weight, reference.layer3[0].conv2.weight, rtol=0, atol=0)


def test_local_weights_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="missing.pth"):
        create_backbone("resnet10", weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="wrong.pth"):
        create_backbone("resnet10", weights=wrong)
    partial = tmp_path / "partial.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, partial)
    with pytest.raises(WeightsUnavailableError, match="missing keys"):
        create_backbone("resnet10", weights=partial)


def test_densenet_old_style_keys_are_renamed() -> None:
    old = "features.denseblock1.denselayer1.norm.1.weight"
    assert backbones_module._DENSENET_OLD_KEY.sub(r"\1\2", old) == "features.denseblock1.denselayer1.norm1.weight"


def test_space_attention_logits_depend_only_on_the_sum_of_the_two_weight_halves() -> None:
    """logit = mean(W_f f + W_g g + b) = (W_f + W_g) g + b with g = mean(f): the README's caveat."""
    torch.manual_seed(0)
    model = create_model("space_attention", backbone="resnet10").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(x)["final"]
        g = features.mean(dim=(2, 3))
        weight = model.classifier.weight[:, :, 0, 0]
        channels = features.shape[1]
        summed = weight[:, :channels] + weight[:, channels:]
        expected = g @ summed.T + model.classifier.bias
        torch.testing.assert_close(model(x).logits, expected, rtol=1e-4, atol=1e-5)
