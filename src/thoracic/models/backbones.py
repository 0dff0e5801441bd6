"""Torchvision backbones behind one interface that exposes the intermediate stages.

Every backbone is split into five stages, ``stem -> layer1 -> layer2 -> layer3 -> layer4``, with output
strides 4, 4, 8, 16 and 32 (ResNet naming). :meth:`Backbone.forward` returns the outputs of ``layer2``,
``layer3`` and the final feature map, which is all the paper's three heads need (the attention-gated
network of paper 3.3 gates ``layer2`` and ``layer3``; the other two read the final map only).

At 256 px with ResNet-34 the maps are layer2 128x32x32, layer3 256x16x16, final 512x8x8 (NOTES.md).

Weights (paper 4.1: ImageNet-pretrained ResNet-34):

* ``weights=PATH`` loads a local torchvision state dict of the same architecture (``fc.*`` /
  ``classifier.*`` keys are ignored); it takes precedence over ``pretrained``.
* ``pretrained=True`` uses torchvision's ``IMAGENET1K_V1`` weights: read from the torch hub cache
  (``<torch hub dir>/checkpoints``) when present, downloaded there otherwise.
* Neither possible (offline, no cache, no file) -> :class:`~thoracic.errors.WeightsUnavailableError`
  naming both ways out.

``freeze=True`` (Wang et al. 2017 froze the backbone; the paper compares frozen and trained, 4.1) sets
``requires_grad=False`` on every backbone parameter **and keeps the backbone's BatchNorm layers in eval
mode** even when the model is put in train mode: a frozen backbone is a fixed feature extractor, so its
running statistics must not drift with the training batches either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from thoracic.errors import ThoracicError, WeightsUnavailableError
from thoracic.models.registry import Registry

#: Keys of :meth:`Backbone.forward`'s result and of :attr:`Backbone.channels`.
FEATURE_KEYS: tuple[str, ...] = ("layer2", "layer3", "final")
#: ``model.output_stride`` values: input pixels per cell of the final map (32 = the paper's networks).
OUTPUT_STRIDES: tuple[int, ...] = (32, 16, 8)


class UnknownBackboneError(ThoracicError, ValueError):
    """A backbone name that is not registered; the message lists the valid ones."""


class Backbone(nn.Module):
    """Five sequential stages and the channel count of each exposed feature map.

    Args:
        stem, layer1, layer2, layer3, layer4: the stages, applied in this order.
        channels: channel counts of ``layer2``, ``layer3`` and ``final`` (the output of ``layer4``).
        name: registry name, for messages.
        frozen: see the module docstring.
    """

    def __init__(
        self,
        stem: nn.Module,
        layer1: nn.Module,
        layer2: nn.Module,
        layer3: nn.Module,
        layer4: nn.Module,
        channels: Mapping[str, int],
        name: str = "custom",
        frozen: bool = False,
    ) -> None:
        super().__init__()
        missing = [key for key in FEATURE_KEYS if key not in channels]
        if missing:
            raise ValueError(f"backbone {name}: channels lacks {missing}; expected keys {list(FEATURE_KEYS)}")
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = stem, layer1, layer2, layer3, layer4
        self.channels: dict[str, int] = {key: int(channels[key]) for key in FEATURE_KEYS}
        self.name = name
        self.frozen = False
        if frozen:
            self.freeze()

    @property
    def final_stage(self) -> nn.Module:
        """The module whose output is the final feature map (the Grad-CAM target layer)."""
        return self.layer4

    def freeze(self) -> None:
        """No gradients for any backbone parameter; BatchNorm statistics fixed (eval mode)."""
        self.frozen = True
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """``nn.Module.train``; a frozen backbone keeps its BatchNorm layers in eval mode."""
        super().train(mode)
        if self.frozen:
            # A frozen backbone is a fixed feature extractor: its BatchNorm running statistics must not
            # be updated by training batches either, so every submodule stays in eval mode.
            for module in self.children():
                module.train(False)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``{"layer2": (B, C2, H/8, W/8), "layer3": (B, C3, H/16, W/16), "final":
        (B, C, H/32, W/32)}`` with the channel counts of :attr:`channels`."""
        x = self.layer1(self.stem(x))
        layer2 = self.layer2(x)
        layer3 = self.layer3(layer2)
        final = self.layer4(layer3)
        return {"layer2": layer2, "layer3": layer3, "final": final}


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def _download_state_dict(url: str) -> dict[str, torch.Tensor]:
    """Download (into the torch hub cache) and read a torchvision checkpoint; patched in tests."""
    return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, check_hash=True)


def load_imagenet_state_dict(name: str, weights: torchvision.models.WeightsEnum | None) -> dict[str, torch.Tensor]:
    """ImageNet state dict of backbone ``name``: from the torch hub cache, else downloaded into it."""
    if weights is None:
        raise WeightsUnavailableError(
            f"no ImageNet weights exist for backbone {name!r}; set model.pretrained: false to train "
            f"from scratch, or model.weights: PATH to load a local state dict of this architecture"
        )
    filename = Path(urlparse(weights.url).path).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    try:
        return _download_state_dict(weights.url)
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP or hash errors all mean the same here
        raise WeightsUnavailableError(
            f"ImageNet weights for backbone {name!r} are not in the torch cache ({cached}) and could not "
            f"be downloaded from {weights.url} ({type(exc).__name__}: {exc}). Either download that file "
            f"into {cached.parent} (or run once with internet), or set model.weights: PATH to a local "
            f"torchvision state dict; model.pretrained: false trains from scratch"
        ) from exc


def load_local_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision backbone state dict from a local file (``.pth``/``.pt``; ``state_dict`` nesting ok)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.weights: {path} does not exist (expected a torchvision backbone state dict file); "
            f"use model.pretrained: true for torchvision's ImageNet weights instead"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise WeightsUnavailableError(f"model.weights: cannot read {path} as a state dict: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsUnavailableError(f"model.weights: {path} holds a {type(state).__name__}, expected a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """Load ``state`` into a torchvision model, ignoring its classifier (fc / classifier) keys."""
    head = ("fc.", "classifier.")
    if name.startswith("densenet"):
        # The published DenseNet checkpoints use old key names ("norm.1"); torchvision renames them too.
        state = {(_DENSENET_OLD_KEY.sub(r"\1\2", key)): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: a state dict of another architecture
        raise WeightsUnavailableError(f"{source} does not match backbone {name!r}: {exc}") from exc
    missing = [key for key in missing if not key.startswith(head)]
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"{source} does not match backbone {name!r}: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {list(unexpected)[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

_BACKBONES = Registry("backbone", UnknownBackboneError)


def register_backbone(name: str) -> Callable:
    """Decorator: register a factory returning ``(torchvision model, ImageNet weights or None)``."""
    return _BACKBONES.register(name)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` (and ``model.backbone``)."""
    return _BACKBONES.names()


@register_backbone("resnet10")
def _resnet10() -> tuple[nn.Module, None]:
    # A small CPU-friendly ResNet (one BasicBlock per stage) for demos and tests; no ImageNet weights exist.
    return ResNet(BasicBlock, [1, 1, 1, 1]), None


@register_backbone("resnet18")
def _resnet18() -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    return torchvision.models.resnet18(weights=None), torchvision.models.ResNet18_Weights.IMAGENET1K_V1


@register_backbone("resnet34")
def _resnet34() -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    return torchvision.models.resnet34(weights=None), torchvision.models.ResNet34_Weights.IMAGENET1K_V1


@register_backbone("resnet50")
def _resnet50() -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    return torchvision.models.resnet50(weights=None), torchvision.models.ResNet50_Weights.IMAGENET1K_V1


@register_backbone("densenet121")
def _densenet121() -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    return torchvision.models.densenet121(weights=None), torchvision.models.DenseNet121_Weights.IMAGENET1K_V1


def _split_stages(model: nn.Module, name: str) -> Backbone:
    """Cut a torchvision ResNet or DenseNet into the five stages (its avgpool and classifier dropped)."""
    if isinstance(model, ResNet):
        channels = {
            "layer2": _out_channels(model.layer2),
            "layer3": _out_channels(model.layer3),
            "final": _out_channels(model.layer4),
        }
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return Backbone(stem, model.layer1, model.layer2, model.layer3, model.layer4, channels, name)
    if isinstance(model, torchvision.models.DenseNet):
        f = model.features
        # Stages end after each dense block so that strides match ResNet's (8, 16, 32); the transition
        # (BN-ReLU-conv-avgpool) that halves the resolution opens the next stage. torchvision applies
        # a ReLU after norm5 in its forward, so the final stage includes it.
        stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
        layer1 = f.denseblock1
        layer2 = nn.Sequential(f.transition1, f.denseblock2)
        layer3 = nn.Sequential(f.transition2, f.denseblock3)
        layer4 = nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=False))
        channels = {
            "layer2": f.transition2.conv.in_channels,
            "layer3": f.transition3.conv.in_channels,
            "final": f.norm5.num_features,
        }
        return Backbone(stem, layer1, layer2, layer3, layer4, channels, name)
    raise TypeError(f"backbone {name}: cannot split a {type(model).__name__} into stages")


def dilate_resnet(model: ResNet, output_stride: int) -> ResNet:
    """Turn the last stage (16) or the last two stages (8) of a ResNet from stride 2 into dilation, in place.

    DeepLab's atrous trick, as torchvision's ``replace_stride_with_dilation`` builds it for Bottleneck
    networks (which raises ``NotImplementedError`` for BasicBlock, i.e. ResNet-10/18/34): in a dilated
    stage the first block's strided convolution and its downsample shortcut get stride 1, that
    convolution keeps the dilation of the stage before, and every later 3 x 3 convolution of the stage
    gets the stage's new dilation (2, or 4 for layer4 at output stride 8) with padding equal to it, so
    each filter still sees the same input positions as before, at the finer spacing. Only strides,
    dilations and paddings change: the weights are untouched, and a checkpoint of either stride loads
    into the other. Same result as torchvision's option for Bottleneck networks (tested).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ThoracicError(f"model.output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
    dilated = {32: (), 16: ("layer4",), 8: ("layer3", "layer4")}[output_stride]
    dilation = 1
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(model, name)
        if name not in dilated:
            continue
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(stage):
            if isinstance(block, BasicBlock):
                convs = [block.conv1, block.conv2]
            elif isinstance(block, Bottleneck):
                convs = [block.conv2]  # the only 3 x 3 (and the strided) convolution of a Bottleneck
            else:
                raise ThoracicError(f"model.output_stride: cannot dilate a {type(block).__name__} block")
            for k, conv in enumerate(convs):
                first = index == 0 and k == 0
                if first:
                    conv.stride = (1, 1)
                    block.stride = 1
                rate = previous if first else dilation
                conv.dilation, conv.padding = (rate, rate), (rate, rate)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return model


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    freeze: bool = False,
    output_stride: int = 32,
) -> Backbone:
    """Build backbone ``name`` (see :func:`list_backbones`) with the weights described in the module doc.

    ``output_stride`` (32, 16 or 8): input pixels per cell of the final map; below 32 the last stage(s)
    of a ResNet are dilated instead of strided (:func:`dilate_resnet`; the weights are unchanged).
    DenseNet-121 has no dilated form here (its transitions pool 2 x 2): only 32.

    Raises:
        UnknownBackboneError: ``name`` is not registered.
        WeightsUnavailableError: the requested weights can be neither found nor downloaded.
        ThoracicError: an ``output_stride`` the backbone does not offer.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ThoracicError(f"model.output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
    model, imagenet = _BACKBONES.get(name)()
    if output_stride != 32 and not isinstance(model, ResNet):
        raise ThoracicError(
            f"model.output_stride: {output_stride} is not available for backbone {name!r} (only 32: its "
            f"average-pooling transitions have no dilated equivalent here); use a ResNet backbone "
            f"(resnet10/18/34/50) for a finer heatmap, or model.output_stride: 32")
    if weights is not None:
        _load_into(model, load_local_state_dict(weights), name, f"model.weights file {weights}")
    elif pretrained:
        _load_into(model, load_imagenet_state_dict(name, imagenet), name, f"ImageNet weights of {name}")
    if output_stride != 32:
        dilate_resnet(model, output_stride)
    backbone = _split_stages(model, name)
    if freeze:
        backbone.freeze()
    return backbone
