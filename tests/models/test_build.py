"""build_model: timm's builders with our multipliers, the private-API guard, and rounding agreement."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.build import EXPLICIT_GENERATOR, TIMM_GENERATORS, build_model, timm_call, timm_generator
from pipeline.scaling import resolve_spec
from pipeline.scaling.rounding import round_filters, round_repeats
from pipeline.scaling.spec import RESNET50

# B0's and MobileNetV2's stages (repeats, output channels), from timm's arch_def / the papers' Table 1.
EFFICIENTNET_STAGES = ((1, 16), (2, 24), (2, 40), (3, 80), (3, 112), (4, 192), (1, 320))
MOBILENETV2_STAGES = ((1, 16), (2, 24), (3, 32), (4, 64), (3, 96), (3, 160), (1, 320))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def last_conv_out(module: nn.Module) -> int:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def test_timm_private_api_guard():
    """The one test that fails, with a clear message, if timm changes the private generators we use."""
    for name in (*TIMM_GENERATORS.values(), EXPLICIT_GENERATOR):
        assert callable(timm_generator(name))
    with pytest.raises(PipelineError, match=r"timm .* has no timm\.models\.efficientnet\._gen_gone.*build\.py"):
        timm_generator("_gen_gone")
    # Same name, same meaning: at multipliers 1 the private generators build timm's registered nets.
    for base, registered in (("efficientnet", "efficientnet_b0"), ("mobilenetv2", "mobilenetv2_100")):
        ours = build_model(resolve_spec(base=base, phi=0))
        theirs = timm.create_model(registered, pretrained=False)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }, f"timm's {TIMM_GENERATORS[base]} no longer builds {registered} at multiplier 1"
    # pycls rounding builds through _create_effnet from explicit block strings: at d = w = 1 that is B0 too
    pycls_b0 = build_model(resolve_spec(strategy="dWr", scale=1))
    assert {k: v.shape for k, v in pycls_b0.state_dict().items()} == {
        k: v.shape for k, v in timm.create_model("efficientnet_b0", pretrained=False).state_dict().items()
    }


@pytest.mark.parametrize(
    ("base", "stages", "kwargs"),
    [
        ("efficientnet", EFFICIENTNET_STAGES, {"variant": "b0"}),
        ("efficientnet", EFFICIENTNET_STAGES, {"variant": "b3"}),
        ("efficientnet", EFFICIENTNET_STAGES, {"variant": "b7"}),
        ("efficientnet", EFFICIENTNET_STAGES, {"strategy": "dWr", "scale": 4, "rounding": "tf"}),
        ("efficientnet", EFFICIENTNET_STAGES, {"strategy": "dWr", "scale": 16, "rounding": "tf"}),
        ("mobilenetv2", MOBILENETV2_STAGES, {"strategy": "dwr", "scale": 4}),
        ("mobilenetv2", MOBILENETV2_STAGES, {"strategy": "w", "scale": 0.5}),
    ],
)
def test_timm_rounding_agrees_with_ours(base, stages, kwargs):
    """timm rounds channels and repeats inside its builder; the result equals pipeline.scaling.rounding."""
    spec = resolve_spec(base=base, **kwargs)
    model = build_model(spec)
    assert model.conv_stem.out_channels == round_filters(32, spec.w)
    assert [len(stage) for stage in model.blocks] == [round_repeats(n, spec.d) for n, _ in stages]
    assert [last_conv_out(stage) for stage in model.blocks] == [round_filters(c, spec.w) for _, c in stages]
    head = round_filters(1280, spec.w)
    # MobileNetV2 keeps its 1280-wide head when narrowed (timm and the paper: max(1280, ·)).
    assert model.conv_head.out_channels == (max(1280, head) if base == "mobilenetv2" else head)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "dWr", "scale": 4},
        {"strategy": "dwr", "scale": 16},
        {"strategy": "w", "scale": 0.5},
        {"strategy": "dWr", "scale": 4, "rounding": "tf"},
        {"phi": 2},
        {"phi": 2, "rounding": "pycls"},
        {"variant": "b5"},
    ],
)
def test_built_network_has_the_specs_stages(kwargs):
    """Blocks per stage, stage, stem and head channels of the timm net are ScaleSpec.stages(), either rounding."""
    spec = resolve_spec(**kwargs)
    shape, model = spec.stages(), build_model(spec)
    assert shape is not None
    assert [len(stage) for stage in model.blocks] == list(shape.depths)
    assert [last_conv_out(stage) for stage in model.blocks] == list(shape.widths)
    assert (model.conv_stem.out_channels, model.conv_head.out_channels) == (shape.stem, shape.head)


def test_pycls_call_is_json_and_replays():
    """The pycls build is a JSON timm call (what export writes) that rebuilds the same network."""
    spec = resolve_spec(strategy="dWr", scale=4)
    call = timm_call(spec, num_classes=10)
    replayed = json.loads(json.dumps(call.kwargs))
    model = timm_generator(call.function)(**replayed)
    assert (call.function, call.architecture) == (EXPLICIT_GENERATOR, None)
    assert model.state_dict().keys() == call.build().state_dict().keys() == build_model(spec, 10).state_dict().keys()
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 240, 240) and model.drop_rate == spec.dropout


@pytest.mark.parametrize(("strategy", "scale"), [("d", 1), ("w", 4), ("d", 4), ("dWr", 4)])
def test_resnet50_layers_and_channels(strategy, scale):
    spec = resolve_spec(base="resnet50", strategy=strategy, scale=scale, rounding="tf")
    model = build_model(spec)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == [round_repeats(n, spec.d) for n in RESNET50.depths]
    planes = [round_filters(c, spec.w) for c in RESNET50.widths]
    assert [s[0].conv1.out_channels for s in stages] == planes
    assert [s[-1].conv3.out_channels for s in stages] == [4 * p for p in planes]  # bottleneck expansion 4
    assert model.conv1.out_channels == 64  # timm's plain stem ignores stem_width: not scaled
    if spec.d == spec.w == 1:
        assert n_params(model) == n_params(timm.create_model("resnet50", pretrained=False)) == 25_557_032


def test_resnet50_pycls_rounding():
    """pycls's AnyNet rule (scaler.py: nearest depth, widths to 8, stem unscaled): dWr s = 4 rounds d = 1.149 down."""
    spec = resolve_spec(base="resnet50", strategy="dWr", scale=4)
    model = build_model(spec)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert spec.rounding == "pycls"
    assert [len(s) for s in stages] == [3, 5, 7, 3]  # TF's ceil: [4, 5, 7, 4]
    assert [s[0].conv1.out_channels for s in stages] == [112, 224, 448, 888]
    assert model.conv1.out_channels == 64


def test_build_options_follow_the_spec():
    spec = resolve_spec(variant="b2", drop_path=0.1, base_resolution=64)
    model = build_model(spec, num_classes=10, in_chans=1)
    assert model.conv_stem.in_channels == 1
    assert model.get_classifier().out_features == 10
    assert model.drop_rate == spec.dropout == 0.3
    drop_path = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert drop_path and 0 < max(drop_path) <= 0.1
    assert model.pretrained_cfg["input_size"] == (1, spec.resolution, spec.resolution) == (1, 76, 76)
    assert model.training


def test_build_rejects_unknown_base_and_bad_sizes():
    spec = resolve_spec(phi=0)
    with pytest.raises(PipelineError, match="no builder for base network 'vgg'"):
        build_model(dataclasses.replace(spec, base="vgg"))
    with pytest.raises(PipelineError, match="num_classes"):
        build_model(spec, num_classes=0)
