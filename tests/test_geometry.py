"""Heatmap geometry: strides and offsets from the layers, dilated stages, registrations, resampling
(the receptive-field probes are in test_geometry_probes.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from thoracic.errors import ThoracicError
from thoracic.geometry import (
    FeatureGrid,
    GeometryError,
    Registration,
    feature_grids,
    heatmap_geometry,
    make_registration,
    module_grid,
    resample_to_grid,
)
from thoracic.heatmaps.boxes import legacy_cell_centres
from thoracic.models import create_model
from thoracic.models.backbones import create_backbone, dilate_resnet


def test_strides_and_offsets_come_from_the_layers() -> None:
    expected = {"resnet10": 0.0, "resnet50": 0.0, "densenet121": 14.0}
    for name, offset in expected.items():
        grids = feature_grids(create_backbone(name), 256)
        assert grids["final"].stride == (32.0, 32.0) and grids["final"].offset == (offset, offset)
        assert grids["layer2"].stride == (8.0, 8.0) and grids["layer3"].stride == (16.0, 16.0)
        assert grids["final"].shape == (8, 8)
    # odd input sizes: the cell count follows the floor arithmetic of every layer
    backbone = create_backbone("resnet10")
    for size in (97, 130, 161):
        grids = feature_grids(backbone, size)
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, size, size))
        assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {k: g.shape for k, g in grids.items()}


def test_module_grid_of_any_backbone_layer() -> None:
    backbone = create_backbone("densenet121")
    grid = module_grid(backbone, backbone.layer3, 224)
    assert grid.stride == (16.0, 16.0) and grid.offset == (6.0, 6.0) and grid.shape == (14, 14)
    resnet = create_backbone("resnet18")
    block = module_grid(resnet, resnet.layer3[0], 224)  # one residual block: after its addition
    assert block == module_grid(resnet, resnet.layer3, 224)
    with pytest.raises(GeometryError, match="not a module of the backbone"):
        module_grid(resnet, nn.Conv2d(1, 1, 1), 224)


def test_joining_branches_of_different_geometry_is_an_error() -> None:
    class Skewed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.b = nn.Conv2d(3, 4, 2, stride=2)  # same size, cells half a pixel away

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"final": self.a(x) + self.b(x)}

    with pytest.raises(GeometryError, match="different geometry"):
        feature_grids(Skewed(), 32)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"final": self.pool(x)}

    with pytest.raises(GeometryError, match="no fixed grid"):
        feature_grids(Pooled(), 32)


# --------------------------------------------------------------------------------------------------
# Output stride (dilated stages)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet10", "resnet34"])
def test_dilated_basicblock_resnet_keeps_weights_and_samples_the_strided_network(name: str) -> None:
    torch.manual_seed(0)
    plain = create_backbone(name).eval()
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        reference = plain(images)
    for output_stride, step in ((16, 2), (8, 4)):
        dilated = create_backbone(name, output_stride=output_stride)
        assert {k: v.shape for k, v in dilated.state_dict().items()} == \
            {k: v.shape for k, v in plain.state_dict().items()}
        dilated.load_state_dict(plain.state_dict())  # strict: the same parameters
        dilated.eval()
        with torch.no_grad():
            out = dilated(images)
        assert out["final"].shape[-2:] == (128 // output_stride,) * 2
        # a trous: the dilated network computes the strided one at every shift; its even (every 4th)
        # cells are exactly the strided network's cells
        # (float32 sums in another order: tolerance relative to the map's range)
        for key, key_step in (("final", step), ("layer3", 2 if output_stride == 8 else 1)):
            expected = reference[key]
            torch.testing.assert_close(out[key][..., ::key_step, ::key_step], expected, rtol=1e-4,
                                       atol=1e-5 * float(expected.abs().max()))


def test_dilation_matches_torchvision_for_bottleneck() -> None:
    torch.manual_seed(0)
    for output_stride, flags in ((16, [False, False, True]), (8, [False, True, True])):
        ours = dilate_resnet(torchvision.models.resnet50(weights=None), output_stride).eval()
        theirs = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=flags).eval()
        theirs.load_state_dict(ours.state_dict())
        for a, b in zip(ours.modules(), theirs.modules()):
            if isinstance(a, nn.Conv2d):
                assert (a.stride, a.padding, a.dilation) == (b.stride, b.padding, b.dilation)
        images = torch.randn(1, 3, 96, 96)
        with torch.no_grad():
            torch.testing.assert_close(ours(images), theirs(images))


def test_output_stride_errors_name_the_option() -> None:
    with pytest.raises(ThoracicError, match="model.output_stride.*densenet121"):
        create_backbone("densenet121", output_stride=16)
    with pytest.raises(ThoracicError, match="model.output_stride must be one of"):
        create_backbone("resnet10", output_stride=4)


@pytest.mark.parametrize(("model", "output_stride", "stride"), [
    ("baseline", 32, 32.0), ("baseline", 8, 8.0), ("space_attention", 16, 16.0), ("attention_gated", 32, 8.0)])
def test_heatmap_geometry_of_a_model(model: str, output_stride: int, stride: float) -> None:
    net = create_model(model, backbone="resnet10", output_stride=output_stride).eval()
    geometry = heatmap_geometry(net, 128)
    with torch.no_grad():
        shape = net(torch.zeros(1, 3, 128, 128), return_maps=True).class_maps.shape[-2:]
    assert geometry == {"stride": stride, "offset": 0.0, "shape": list(shape), "input_size": 128}
    assert heatmap_geometry(create_model(model, backbone="densenet121"), 128)["offset"] == \
        (14.0 if model != "attention_gated" else 2.0)


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def test_registrations_place_cells_in_original_pixels() -> None:
    grid = FeatureGrid((5, 5), (32.0, 32.0), (0.0, 0.0), (160, 160))
    geometric = make_registration("geometric", grid)
    rows, cols = geometric((5, 5), (1024, 512))
    # cell k at model pixel 32 k; model pixel q at original (q + 0.5) * original / 160 - 0.5 (PIL resize)
    np.testing.assert_allclose(rows, (32 * np.arange(5) + 0.5) * 1024 / 160 - 0.5)
    np.testing.assert_allclose(cols, (32 * np.arange(5) + 0.5) * 512 / 160 - 0.5)
    legacy = make_registration("legacy", grid)
    legacy_rows, legacy_cols = legacy((5, 5), (1024, 512))
    np.testing.assert_allclose(legacy_rows, legacy_cell_centres(5, 1024))
    np.testing.assert_allclose(legacy_cols, legacy_cell_centres(5, 512))
    assert np.all(legacy_rows - rows > 95)  # half a cell (16 model px = 99 original px) apart
    with pytest.raises(GeometryError, match="does not fit its grid"):
        geometric((4, 4), 1024)
    with pytest.raises(GeometryError, match="registration must be one of"):
        make_registration("nearest", grid)
    assert Registration.from_description(geometric.describe()) == geometric
    assert geometric.other().name == "legacy" and legacy.other().name == "geometric"


def test_a_grid_has_one_json_form_read_back_under_both_key_names() -> None:
    grid = FeatureGrid((6, 5), (32.0, 30.0), (14.0, 15.5), (192, 150))
    stored = grid.to_dict()
    assert stored == {"shape": [6, 5], "stride": [32.0, 30.0], "offset": [14.0, 15.5], "input_size": [192, 150]}
    assert FeatureGrid.from_dict(stored) == grid
    assert Registration("geometric", grid).describe() == {"registration": "geometric", **stored}
    assert Registration.from_description(Registration("legacy", grid).describe()) == Registration("legacy", grid)
    earlier = {"map_size": [6, 5], "stride": [32.0, 30.0], "cell_centre_offset": [14.0, 15.5],
               "input_size": [192, 150], "convention": "words"}  # export metadata of earlier versions
    assert FeatureGrid.from_dict(earlier) == grid
    for broken in ({**stored, "stride": [32.0]}, {k: v for k, v in stored.items() if k != "offset"},
                   {**stored, "shape": "6x5"}):
        with pytest.raises(GeometryError, match="expected the keys shape, stride, offset, input_size"):
            FeatureGrid.from_dict(broken)
    with pytest.raises(GeometryError, match="no 'registration' key"):
        Registration.from_description(stored)


def test_resample_to_grid_interpolates_at_registered_positions() -> None:
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    source = FeatureGrid((4, 4), (32.0, 32.0), (0.0, 0.0), (128, 128))
    target = FeatureGrid((16, 16), (8.0, 8.0), (0.0, 0.0), (128, 128))
    out = resample_to_grid(maps, source, target)[0, 0].numpy()
    position = np.arange(16) * 8 / 32  # fractional source cell of every target cell
    expected_cols = np.interp(position, np.arange(4), np.arange(4.0))
    expected_rows = np.interp(position, np.arange(4), np.arange(0.0, 16.0, 4.0))
    np.testing.assert_allclose(out, expected_rows[:, None] + expected_cols[None, :], atol=1e-5)
    assert resample_to_grid(maps, source, source) is maps
