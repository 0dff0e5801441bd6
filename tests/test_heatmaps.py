"""Native heatmaps and Grad-CAM: shape, range, no leaked state, and peaks where the evidence is."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from thoracic.heatmaps import HEATMAP_METHOD_NAMES, GradCAM, NativeHeatmap, create_heatmap_method
from thoracic.models import Backbone, create_model

MODELS = ("baseline", "space_attention", "attention_gated")


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("name", MODELS)
def test_every_method_gives_maps_on_its_own_grid(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, backbone="resnet10").eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        native_shape = model(images, return_maps=True).class_maps.shape  # (2, 14, h, w)
    hooks = _hook_count(model)
    expected_grids = {"native": native_shape[-2:], "gradcam": (2, 2), "gradcam-layer3": (4, 4),
                      "gradcam-layer2": (8, 8), "ig": (64, 64), "gradcampp": (2, 2), "smoothgrad": (64, 64),
                      "occlusion": (64, 64)}
    assert set(expected_grids) == set(HEATMAP_METHOD_NAMES)
    for method_name in HEATMAP_METHOD_NAMES:
        with create_heatmap_method(method_name, model) as method:
            grid = method.grid(64)
            single = method(images, [1, 4])
            same_class = method(images, 3)
            # all 14 classes: one pass each; the native maps and the final-stage Grad-CAM stand for the rest
            every = method.all_classes(images) if method_name in ("native", "gradcam") else None
        assert tuple(grid.shape) == tuple(expected_grids[method_name]), method_name
        assert single.shape == same_class.shape == (2, *grid.shape)
        torch.testing.assert_close(method(images[1:], 4), single[1:], rtol=1e-5, atol=1e-5)  # per image
        for maps in (single, same_class, *(() if every is None else (every,))):
            assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        if every is not None:
            assert every.shape == (2, 14, *grid.shape)
            torch.testing.assert_close(every[:, 3], same_class, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(every[[0, 1], [1, 4]], single, rtol=1e-5, atol=1e-5)
    # Nothing left attached to the model and no gradients accumulated into its parameters.
    assert _hook_count(model) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_constant_class_map_gives_zeros() -> None:
    model = create_model("space_attention", backbone="resnet10").eval()
    nn.init.zeros_(model.classifier.weight)  # every class map is the constant bias
    with torch.no_grad():
        model.classifier.bias.fill_(0.3)
    maps = NativeHeatmap(model)(torch.randn(2, 3, 64, 64), 0)
    assert torch.equal(maps, torch.zeros_like(maps))


def test_class_index_is_checked() -> None:
    model = create_model("baseline", backbone="resnet10").eval()
    images = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="range|lie in"):
        NativeHeatmap(model)(images, 14)
    with pytest.raises(ValueError, match="batch"):
        GradCAM(model)(images, [0, 1, 2])


# --------------------------------------------------------------------------------------------------
# Evidence in one place -> the heatmap peaks there
# --------------------------------------------------------------------------------------------------

SIZE = 128
# Class 2's evidence: channel 0, bottom-left 32x32 block; class 5's: channel 1, top-right block.
BLOCKS = {2: (0, slice(96, 128), slice(0, 32)), 5: (1, slice(0, 32), slice(96, 128))}


def _pooling_backbone() -> Backbone:
    """A parameter-free backbone: average pooling with ResNet's strides (4, 4, 8, 16, 32), 3 channels."""
    return Backbone(
        nn.AvgPool2d(4), nn.Identity(), nn.AvgPool2d(2), nn.AvgPool2d(2), nn.AvgPool2d(2),
        channels={"layer2": 3, "layer3": 3, "final": 3}, name="pooling",
    )


def _set_weights(model: nn.Module, name: str) -> None:
    """Class k reads only its own evidence channel; every other weight is zero."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for k, (channel, _, _) in BLOCKS.items():
            if name == "baseline":
                model.transition.weight[:, :, 0, 0] = torch.eye(3)
                model.classifier.weight[k, channel] = 1.0
            elif name == "space_attention":
                model.classifier.weight[k, channel, 0, 0] = 1.0  # the local half of the 1x1 conv
            else:
                model.classifier.weight[k, 3 + 3 + channel] = 1.0  # the final level's slice
                for gate in model.gates.values():
                    gate.theta.weight[0, :2, 0, 0] = 1.0  # attend to both evidence channels
                    gate.psi.weight.fill_(1.0)


def _evidence_image() -> torch.Tensor:
    image = torch.zeros(1, 3, SIZE, SIZE)
    for channel, rows, cols in BLOCKS.values():
        image[0, channel, rows, cols] = 1.0
    return image


@pytest.mark.parametrize("method_name", ["native", "gradcam", "gradcam-layer3", "ig", "gradcampp", "smoothgrad",
                                         "occlusion"])
@pytest.mark.parametrize("name", MODELS)
def test_heatmap_peaks_where_the_class_evidence_is(name: str, method_name: str) -> None:
    model = create_model(name, backbone=_pooling_backbone()).eval()
    _set_weights(model, name)
    image = _evidence_image()
    with create_heatmap_method(method_name, model) as method:
        row_centres, col_centres = method.grid(SIZE).centres()
        for k, (_, rows, cols) in BLOCKS.items():
            heatmap = method(image, k)[0]
            if method_name == "smoothgrad" and name != "baseline":
                # these two heads are linear in the pooled evidence here: the gradient is the same at every
                # pixel, so the gradient map is constant (all zeros after normalisation) and points nowhere
                assert torch.equal(heatmap, torch.zeros_like(heatmap))
                continue
            assert heatmap.max() == 1.0
            row, col = divmod(int(heatmap.argmax()), heatmap.shape[1])
            # The peak's cell centre, in image pixels (where the method's grid puts it), lies inside
            # this class's block.
            assert rows.start <= row_centres[row] < rows.stop, (k, row, col, heatmap)
            assert cols.start <= col_centres[col] < cols.stop, (k, row, col, heatmap)


# --------------------------------------------------------------------------------------------------
# Heatmap code depends only on the model output type (house style), not on the models package
# --------------------------------------------------------------------------------------------------


def test_importing_heatmaps_does_not_import_the_models_package() -> None:
    """A fresh interpreter: ``import thoracic.heatmaps`` leaves ``thoracic.models`` unloaded, and the
    native maps work on any module whose output has ``class_maps`` (duck typing)."""
    code = textwrap.dedent(
        """
        import sys
        from types import SimpleNamespace

        import torch

        import thoracic.heatmaps as heatmaps

        loaded = sorted(m for m in sys.modules if m == "thoracic.models" or m.startswith("thoracic.models."))
        assert not loaded, f"thoracic.heatmaps imported {loaded}"

        class Tiny(torch.nn.Module):
            num_classes = 2

            def forward(self, x, return_maps=False):
                maps = torch.stack([x[:, 0], -x[:, 0]], dim=1)
                return SimpleNamespace(logits=maps.mean(dim=(2, 3)), class_maps=maps if return_maps else None)

        image = torch.zeros(1, 3, 4, 4)
        image[0, 0, 1, 2] = 5.0
        heatmap = heatmaps.NativeHeatmap(Tiny())(image, 0)[0]
        assert divmod(int(heatmap.argmax()), 4) == (1, 2) and float(heatmap.max()) == 1.0
        assert "thoracic.models" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_box_extraction_and_the_metrics_do_not_import_torch() -> None:
    """A fresh interpreter: the box extraction, the method names and the evaluation metrics load without torch."""
    code = ("import sys\n"
            "import thoracic.evaluation\n"
            "from thoracic.heatmaps import HEATMAP_METHOD_NAMES, HEATMAP_THRESHOLDS, boxes_from_heatmap\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_map_operations_normalise_each_map_on_its_own_and_resize_bilinearly() -> None:
    from thoracic import maps

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=generator) * 7 + 2
    x[1, 2] = 4.0  # one constant map among varying ones
    normalized = maps.minmax_normalize(x)
    assert normalized.shape == x.shape
    for b in range(2):
        for c in range(3):
            if (b, c) == (1, 2):
                assert torch.equal(normalized[b, c], torch.zeros(4, 5))  # no information: zeros, not NaN
                continue
            low, high = x[b, c].min(), x[b, c].max()
            torch.testing.assert_close(normalized[b, c], (x[b, c] - low) / (high - low))
    # every other map is scaled on its own: its range is exactly [0, 1] whatever its neighbours hold
    assert normalized[0].amin(dim=(1, 2)).tolist() == [0.0, 0.0, 0.0]
    assert normalized[0].amax(dim=(1, 2)).tolist() == [1.0, 1.0, 1.0]
    # the maps the models and both heatmap methods produce are these normalised maps
    model = create_model("baseline", backbone="resnet10").eval()
    images = torch.randn(2, 3, 96, 96, generator=generator)
    with torch.no_grad():
        raw = model(images, return_maps=True).class_maps
    torch.testing.assert_close(NativeHeatmap(model).all_classes(images), maps.minmax_normalize(raw))

    x = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]]]])
    # (x - 1) / (9 - 1) by hand.
    torch.testing.assert_close(maps.minmax_normalize(x), torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]]))
    assert maps.resize_maps(x, (2, 2)) is x  # already that size: no copy
    # Bilinear (align_corners=False) 2x2 -> 4x4: the centre cells average their neighbours.
    resized = maps.resize_maps(x, (4, 4))
    assert resized.shape == (1, 1, 4, 4)
    torch.testing.assert_close(resized[0, 0, 1, 1], torch.tensor(0.5625 * 1 + 0.1875 * 3 + 0.1875 * 5 + 0.0625 * 9))
    torch.testing.assert_close(resized[0, 0, 0, 0], torch.tensor(1.0))
    torch.testing.assert_close(resized[0, 0, 3, 3], torch.tensor(9.0))
    # non-square target: rows and columns are interpolated independently (1-D case by hand)
    row = maps.resize_maps(torch.tensor([[[[0.0, 4.0]]]]), (1, 4))
    torch.testing.assert_close(row, torch.tensor([[[[0.0, 1.0, 3.0, 4.0]]]]))


def test_a_new_method_overrides_one_function() -> None:
    """The template ``__call__`` of the base class: a method defining only ``attribute`` (and its grid) gets
    the index check, the normalisation, ``all_classes`` and ``selected``."""
    from thoracic.geometry import FeatureGrid
    from thoracic.heatmaps import HeatmapMethod

    class Brightness(HeatmapMethod):  # the input's first channel, scaled by the class index plus one
        uses_gradients = False

        def grid(self, input_size: int) -> FeatureGrid:
            return FeatureGrid((input_size, input_size), (1.0, 1.0), (0.0, 0.0), (input_size, input_size))

        def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            assert not torch.is_grad_enabled()
            return images[:, 0] * (index[:, None, None] + 1.0)

    model = create_model("baseline", backbone="resnet10").eval()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    method = Brightness(model)
    expected = (images[:, 0] - images[:, 0].amin(dim=(1, 2), keepdim=True)) / (
        images[:, 0].amax(dim=(1, 2), keepdim=True) - images[:, 0].amin(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(method(images, [3, 7]), expected)
    assert method.all_classes(images).shape == (2, 14, 8, 8)
    assert set(method.selected(images, [(0, 2), (1, 5)])) == {(0, 2), (1, 5)}
    with pytest.raises(ValueError, match="lie in"):
        method(images, 14)
