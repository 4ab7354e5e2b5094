"""count_complexity: the papers' convention, EfficientNet's Table 2, and Dollár et al.'s growth laws."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.build import build_model
from pipeline.models.complexity import Complexity, count_complexity
from pipeline.scaling import resolve_spec

B0 = Complexity(flops=385_825_092, params=5_288_548, acts=6_748_036)


def count(**spec_kwargs) -> Complexity:
    spec = resolve_spec(**spec_kwargs)
    return count_complexity(build_model(spec), spec.resolution)


def test_b0_at_224_exact():
    assert count(variant="b0") == B0


def test_convention_on_a_hand_counted_net():
    """conv and linear multiply-adds + bias adds; BN, activations and pooling count no flops."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=True),  # 10×10 → 8×8
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),  # grouped: k²·c_in·c_out·h·w / g
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    conv1 = 3 * 3 * 3 * 8 * 8 * 8 + 8 * 8 * 8  # MACs + one add per output element for the bias
    conv2 = 3 * 3 * 8 * 8 * 8 * 8 // 4
    linear = 8 * 5 + 5
    params = (3 * 3 * 3 * 8 + 8) + 2 * 8 + (3 * 3 * 2 * 8) + (8 * 5 + 5)
    acts = 8 * 8 * 8 + 8 * 8 * 8 + 5
    assert count_complexity(net, 10) == Complexity(flops=conv1 + conv2 + linear, params=params, acts=acts)


def test_fvcore_cross_check_and_its_default_also_counts_batchnorm():
    """An independent counter (fvcore's TorchScript tracer) agrees with ours on B0's conv + linear work."""
    with warnings.catch_warnings():  # fvcore.nn's __init__ jit-scripts a loss, deprecated since torch 2.10
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    model = build_model(resolve_spec(variant="b0")).eval()
    with torch.no_grad():
        ops = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224)).unsupported_ops_warnings(False).by_operator()
    assert ops["batch_norm"] > 13_000_000  # ~3.5% of B0 that the papers do not count
    # Ours = fvcore's conv + linear multiply-adds + the bias adds of B0's 25 biased layers (SE convs, classifier).
    assert B0.flops == ops["conv"] + ops["linear"] + 10_340


def test_counts_are_torch_flop_counter_with_the_papers_formulas():
    """torch's own formulas count 2 FLOPs per multiply-add and no bias: ours are exactly half plus the bias adds."""
    from torch.utils.flop_counter import FlopCounterMode

    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.Flatten(), nn.Linear(8 * 8 * 8, 5, bias=False))
    with torch.no_grad(), FlopCounterMode(display=False) as torch_default:
        net(torch.zeros(1, 3, 10, 10))
    assert count_complexity(net, 10).flops == torch_default.get_total_flops() // 2 + 8 * 8 * 8


def test_a_compiled_module_is_refused_and_the_eager_one_counted():
    model = build_model(resolve_spec(phi=0, base_resolution=32))
    eager = count_complexity(model, 32)
    model.compile()  # in place, as ScaledClassifier(compile=True) does; nothing is compiled until a call
    with pytest.raises(ValueError, match=r"count before torch\.compile"):
        count_complexity(model, 32)
    with pytest.raises(ValueError, match=r"count before torch\.compile"):
        count_complexity(torch.compile(build_model(resolve_spec(phi=0, base_resolution=32))), 32)
    assert eager.flops > 0


def test_counting_keeps_the_model_as_it_was():
    model = build_model(resolve_spec(phi=0, base_resolution=64))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_complexity(model, 64)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched


def test_resolution_below_output_stride_is_refused():
    model = build_model(resolve_spec(phi=0))
    with pytest.raises(PipelineError, match="resolution 16 is smaller than the network's output stride 32"):
        count_complexity(model, 16)
    assert count_complexity(model, 32).acts > 0


# EfficientNet paper, Table 2: params (M) and FLOPs (B) as printed.
PAPER_TABLE2 = {
    "b0": ("5.3", "0.39"), "b1": ("7.8", "0.70"), "b2": ("9.2", "1.0"), "b3": ("12", "1.8"),
    "b4": ("19", "4.2"), "b5": ("30", "9.9"), "b6": ("43", "19"), "b7": ("66", "37"),
}
# What the released architectures (TF efficientnet_builder = timm) count at their resolutions.
COUNTED = {
    "b0": Complexity(flops=385_825_092, params=5_288_548, acts=6_748_036),
    "b1": Complexity(flops=686_817_992, params=7_794_184, acts=10_884_328),
    "b2": Complexity(flops=993_578_282, params=9_109_994, acts=13_832_834),
    "b3": Complexity(flops=1_827_162_472, params=12_233_232, acts=23_831_296),
    "b4": Complexity(flops=4_393_801_064, params=19_341_616, acts=49_489_032),
    "b5": Complexity(flops=10_266_426_072, params=30_389_784, acts=98_857_400),
    "b6": Complexity(flops=19_067_647_136, params=43_040_704, acts=167_393_400),
    "b7": Complexity(flops=37_745_958_392, params=66_347_960, acts=289_939_464),
}
# Where the printed digits are not the rounded count (each gap is asserted below to stay < 5%):
# - B2 params: 9.11 M; the paper's 9.2 counts TF's batch-norm moving mean/variance too (9.18 M).
# - B1 flops 0.687 B vs 0.70 (−1.9%); B4 4.39 vs 4.2 (+4.6%); B5 10.27 vs 9.9 (+3.7%): the paper's
#   figures are off for the released architectures (known; every reimplementation counts the same).
# - B7 flops 37.7 B printed as 37: truncated, not rounded.
KNOWN_GAPS = {("b2", "params"), ("b1", "flops"), ("b4", "flops"), ("b5", "flops"), ("b7", "flops")}


def as_printed(value: float, printed: str) -> str:
    decimals = len(printed.partition(".")[2])
    return f"{value:.{decimals}f}"


@pytest.mark.slow
def test_table2_b0_to_b7():
    for name, (paper_params, paper_flops) in PAPER_TABLE2.items():
        model = build_model(resolve_spec(variant=name))
        counted = count_complexity(model, resolve_spec(variant=name).resolution)
        assert counted == COUNTED[name], name
        for kind, value, printed in (("params", counted.params / 1e6, paper_params),
                                     ("flops", counted.flops / 1e9, paper_flops)):
            if (name, kind) in KNOWN_GAPS:
                assert as_printed(value, printed) != printed, f"{name} {kind} now matches: drop it from KNOWN_GAPS"
                assert abs(value / float(printed) - 1) < 0.05, (name, kind, value, printed)
            else:
                assert as_printed(value, printed) == printed, (name, kind, value, printed)
        if name == "b2":
            bn_stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
            assert as_printed((counted.params + bn_stats) / 1e6, paper_params) == paper_params


# Dollár et al. (Table 1 of "Fast and Accurate Model Scaling"): scaling flops by s, activations grow as s^e.
ACTS_EXPONENT = {"w": 0.5, "d": 1.0, "r": 1.0, "dwr": 5 / 6, "dWr": 0.6}
SCALES = (4, 16)


def fitted_exponent(growth: dict[float, float]) -> float:
    """Least-squares slope of log(growth) on log(s) through the origin (s = 1 is the base: growth 1)."""
    xs, ys = [math.log(s) for s in growth], [math.log(g) for g in growth.values()]
    return sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)


@pytest.fixture(scope="module")
def strategy_costs() -> dict[tuple[str, float], Complexity]:
    return {(st, s): count(strategy=st, scale=s) for st in ACTS_EXPONENT for s in SCALES}


@pytest.mark.slow
def test_dollar_flops_grow_as_s(strategy_costs):
    # Measured flops / (s · B0 flops), s = 4 / 16, pycls rounding (the strategies' default): w 0.94 / 0.91,
    # d 1.02 / 1.03, r 1.00 / 1.00, dwr 1.10 / 1.12, dWr 0.89 / 0.89. Low side: the stem conv (3 input
    # channels) and the classifier (1000 outputs) grow as w, not w². Depth rounds to the nearest block per
    # stage, which can land either side. Under TF rounding (ceil: any d > 1 adds a block to every one of the 7
    # stages) dWr at s = 4 was 1.30 and dwr 1.21. Hence [0.85, 1.35].
    for (st, s), c in strategy_costs.items():
        assert 0.85 <= c.flops / (s * B0.flops) <= 1.35, (st, s, c.flops / B0.flops)


@pytest.mark.slow
def test_dollar_activation_exponents(strategy_costs):
    fitted = {st: fitted_exponent({s: strategy_costs[st, s].acts / B0.acts for s in SCALES}) for st in ACTS_EXPONENT}
    # Measured (pycls rounding): w 0.500, d 0.913, r 1.000, dwr 0.816, dWr 0.567. Tolerance 0.1 because:
    # depth repeats a stage's non-first block, which runs at the stage's output resolution, while the first
    # block expands at the previous (2× larger) resolution; with the unrepeated stem, extra depth adds fewer
    # activations per block than B0's average (d: −0.09). Rounded repeats add whole blocks or none at small d
    # (dWr, d = 1.15 at s = 4: 17 blocks for 16 × 1.15 = 18.4, −0.03; dwr −0.02; TF's ceil gave 23 blocks,
    # +0.045, and dwr +0.03). Width and resolution follow exactly (resolution to 4 px, channels to 8: < 0.01).
    for st, expected in ACTS_EXPONENT.items():
        assert abs(fitted[st] - expected) <= 0.1, (st, fitted[st], expected)
    # The paper's point: fast scaling's activations grow nearly as slowly as width-only, far below d and r.
    assert fitted["w"] < fitted["dWr"] < fitted["dwr"] < min(fitted["d"], fitted["r"])


def test_width_and_resolution_growth_at_s4():
    """The quick subset of the above: w and r at s = 4 (no depth rounding involved)."""
    w4, r4 = count(strategy="w", scale=4), count(strategy="r", scale=4)
    assert w4.acts / B0.acts == pytest.approx(2, rel=0.01)  # acts ∝ w
    assert r4.acts / B0.acts == pytest.approx(4, rel=0.01)  # acts ∝ r²
    assert r4.params == B0.params
    assert 0.9 <= w4.flops / (4 * B0.flops) <= 1.0 <= r4.flops / (4 * B0.flops) * 1.01


@pytest.mark.parametrize("base", ["mobilenetv2", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_other_bases_scale(base):
    """MobileNetV2 and ResNet-50 (Table 3 of the EfficientNet paper) grow as w and d predict (s = 4, 64 px)."""
    base_cost = count(base=base, phi=0, base_resolution=64)
    w4 = count(base=base, strategy="w", scale=4, base_resolution=64)
    d4 = count(base=base, strategy="d", scale=4, base_resolution=64)
    # flops ∝ d·w²; params ∝ d·w² but the unscaled stem and the classifier (∝ w) hold width's params back
    # (MobileNetV2: 3.2×, its 1000-way classifier is a third of the net); acts ∝ w for width, ≈ d for depth.
    for grown in (w4, d4):
        assert 3.4 <= grown.flops / base_cost.flops <= 4.2
        assert 3.0 <= grown.params / base_cost.params <= 4.2
    assert w4.acts / base_cost.acts == pytest.approx(2, rel=0.05)
    assert 3.0 <= d4.acts / base_cost.acts <= 4.0
