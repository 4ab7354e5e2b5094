"""Dollár et al.'s strategies built as pycls builds them: ``rounding="pycls"`` equals pycls's own numbers.

PYCLS holds what facebookresearch/pycls@5719de6 itself gives for EfficientNet-B0
(``configs/dds_baselines/effnet/EN-B0_dds_8gpu.yaml``) scaled by ``pycls/models/scaler.py:scale_model``
(MODEL.SCALING_TYPE d, w, r, dw, dr, wr, dwr, and d1_w8_g8_r1 for dWr; SCALING_FACTOR 4 and 16): the
resulting EN.DEPTHS, EN.WIDTHS, EN.STEM_W, EN.HEAD_W and TRAIN.IM_SIZE, and flops, params and acts of
``pycls/models/effnet.py:EffNet.complexity`` at that IM_SIZE (pycls's complexity rules: multiply-adds of
convs and linear layers plus bias adds, batch-norm weights in params, conv and linear outputs in acts).
They were produced by running pycls's code (scale_model, then EffNet.complexity) and are hard-coded here.
tests/models/test_pycls_build.py checks the networks timm builds from these specs against the same table.
"""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.scaling import resolve_spec
from pipeline.scaling.cost import effnet_cost
from pipeline.scaling.rounding import pycls_filters, pycls_repeats, round_filters, round_repeats

PYCLS: dict[tuple[str, int], dict] = {
    ("d", 4): {"depths": [4, 8, 8, 12, 12, 16, 4], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
               "head": 1280, "resolution": 224, "flops": 1575176640, "params": 20091856, "acts": 22784704},
    ("d", 16): {"depths": [16, 32, 32, 48, 48, 64, 16], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
                "head": 1280, "resolution": 224, "flops": 6332582832, "params": 79305088, "acts": 86931376},
    ("w", 4): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [32, 48, 80, 160, 224, 384, 640], "stem": 64,
               "head": 2560, "resolution": 224, "flops": 1449978528, "params": 18122720, "acts": 13495072},
    ("w", 16): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [64, 96, 160, 320, 448, 768, 1280], "stem": 128,
                "head": 5120, "resolution": 224, "flops": 5613273432, "params": 66430936, "acts": 26989144},
    ("r", 4): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
               "head": 1280, "resolution": 448, "flops": 1537547748, "params": 5288548, "acts": 26961124},
    ("r", 16): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
                "head": 1280, "resolution": 896, "flops": 6144438372, "params": 5288548, "acts": 107813476},
    ("dw", 4): {"depths": [2, 4, 4, 6, 6, 8, 2], "widths": [24, 32, 56, 112, 160, 272, 456], "stem": 48,
                "head": 1808, "resolution": 224, "flops": 1509751514, "params": 19501522, "acts": 17052298},
    ("dw", 16): {"depths": [4, 8, 8, 12, 12, 16, 4], "widths": [32, 48, 80, 160, 224, 384, 640], "stem": 64,
                 "head": 2560, "resolution": 224, "flops": 5977799832, "params": 75725240, "acts": 45568408},
    ("dr", 4): {"depths": [2, 4, 4, 6, 6, 8, 2], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
                "head": 1280, "resolution": 316, "flops": 1586243976, "params": 10222984, "acts": 24335272},
    ("dr", 16): {"depths": [4, 8, 8, 12, 12, 16, 4], "widths": [16, 24, 40, 80, 112, 192, 320], "stem": 32,
                 "head": 1280, "resolution": 448, "flops": 6286453728, "params": 20091856, "acts": 91006816},
    ("wr", 4): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [24, 32, 56, 112, 160, 272, 456], "stem": 48,
                "head": 1808, "resolution": 316, "flops": 1510132882, "params": 9720946, "acts": 19327250},
    ("wr", 16): {"depths": [1, 2, 2, 3, 3, 4, 1], "widths": [32, 48, 80, 160, 224, 384, 640], "stem": 64,
                 "head": 2560, "resolution": 448, "flops": 5784648672, "params": 18122720, "acts": 53921248},
    ("dwr", 4): {"depths": [2, 3, 3, 5, 5, 6, 2], "widths": [24, 32, 48, 104, 144, 240, 400], "stem": 40,
                 "head": 1616, "resolution": 284, "flops": 1696567884, "params": 13234516, "acts": 21548476},
    ("dwr", 16): {"depths": [3, 5, 5, 8, 8, 10, 3], "widths": [24, 40, 64, 128, 176, 304, 504], "stem": 48,
                  "head": 2032, "resolution": 356, "flops": 6917966844, "params": 32284636, "acts": 63882324},
    ("dWr", 4): {"depths": [1, 2, 2, 3, 3, 5, 1], "widths": [24, 40, 72, 136, 192, 336, 560], "stem": 56,
                 "head": 2232, "resolution": 240, "flops": 1381124070, "params": 15824374, "acts": 13328046},
    ("dWr", 16): {"depths": [1, 3, 3, 4, 4, 5, 1], "widths": [48, 72, 120, 240, 336, 584, 968], "stem": 96,
                  "head": 3880, "resolution": 256, "flops": 5477638310, "params": 47392966, "acts": 34302246},
}


def shape_of(strategy: str, scale: int, **kwargs: object) -> dict:
    """A spec's built shape and its cost by pycls's rules, in PYCLS's keys."""
    spec = resolve_spec(strategy=strategy, scale=scale, **kwargs)  # type: ignore[arg-type]
    stages = spec.stages()
    assert stages is not None and stages.head is not None
    cost = effnet_cost(stages, spec.resolution)
    return {"depths": list(stages.depths), "widths": list(stages.widths), "stem": stages.stem, "head": stages.head,
            "resolution": spec.resolution, "flops": cost.flops, "params": cost.params, "acts": cost.acts}


@pytest.mark.parametrize(("strategy", "scale"), list(PYCLS))
def test_strategy_points_are_pycls_networks(strategy: str, scale: int) -> None:
    assert resolve_spec(strategy=strategy, scale=scale).rounding == "pycls"  # the default for strategy points
    assert shape_of(strategy, scale) == PYCLS[strategy, scale]


def test_tf_rounding_on_request_builds_what_main_built() -> None:
    """dWr and dwr at s = 4 under TF rounding: the 1,998 M and 1,871 M multiply-add nets of issue 20, not pycls's."""
    dwr_tf, fast_tf = shape_of("dwr", 4, rounding="tf"), shape_of("dWr", 4, rounding="tf")
    assert (fast_tf["depths"], fast_tf["flops"]) == ([2, 3, 3, 4, 4, 5, 2], 1_997_765_658)
    assert (dwr_tf["depths"], dwr_tf["flops"]) == ([2, 4, 4, 5, 5, 7, 2], 1_871_473_532)
    assert shape_of("dw", 4, rounding="tf") == PYCLS["dw", 4]  # where the rules agree, the nets agree


def test_the_two_rules_differ_where_the_issue_says() -> None:
    assert (round_repeats(4, 4**0.1), pycls_repeats(4, 4**0.1)) == (5, 5)
    assert (round_repeats(1, 4**0.1), pycls_repeats(1, 4**0.1)) == (2, 1)  # ceil vs nearest
    assert pycls_repeats(1, 0.3) == 1  # never below one block
    assert (round_filters(16, 1.741), pycls_filters(16, 1.741)) == (32, 24)  # 27.9: TF's 10% rule bumps 24 → 32
    assert (round_filters(1280, 1.741), pycls_filters(1280, 1.741)) == (2232, 2232)


def test_variants_and_compound_keep_tf_rounding() -> None:
    assert resolve_spec(variant="b3").rounding == resolve_spec(phi=3).rounding == "tf"
    b3 = resolve_spec(variant="b3").stages()
    # pycls's own EN-B3 config (configs/dds_baselines/effnet/EN-B3_dds_8gpu.yaml) is TF-rounded B3
    assert b3 is not None and (b3.depths, b3.widths, b3.stem, b3.head) == (
        (2, 3, 3, 5, 5, 6, 2), (24, 32, 48, 96, 136, 232, 384), 40, 1536)
    assert resolve_spec(phi=1, rounding="pycls").record()["rounding"] == "pycls"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phi": 1, "rounding": "floor"}, "unknown rounding 'floor'; choose one of tf, pycls"),
        ({"strategy": "w", "scale": 4, "base": "mobilenetv2", "rounding": "pycls"}, "use rounding tf"),
    ],
)
def test_bad_rounding_is_one_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        resolve_spec(**kwargs)  # type: ignore[arg-type]
