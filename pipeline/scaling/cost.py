"""Flops, params and activations of an EfficientNet shape without building it, by pycls's complexity rules.

This follows facebookresearch/pycls ``pycls/models/effnet.py`` (``EffNet.complexity``, ``StemIN`` /
``MBConv`` / ``EffHead.complexity``) and ``pycls/models/blocks.py`` (``conv2d_cx``, ``norm2d_cx``,
``linear_cx``, ``SE.complexity``): flops are multiply-adds of convs and linear layers plus one add per
output element of a biased layer; params include batch-norm's weight and bias; acts are the output
elements of every conv and linear layer. That is the convention of ``pipeline.models.complexity``, and
``tests/models`` checks that the two agree exactly on networks timm builds. It keeps ``scaling`` torch-free
where a rule needs a point's cost before its network exists (the regularisation rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.scaling.rounding import Stages

# EfficientNet-B0 per stage (pycls configs/dds_baselines/effnet/EN-B0_dds_8gpu.yaml: EN.STRIDES,
# EN.EXP_RATIOS, EN.KERNELS; SE_R 0.25 is pycls's default EN.SE_R); timm's _gen_efficientnet agrees.
EFFNET_STRIDES = (1, 2, 2, 2, 1, 2, 1)
EFFNET_EXP_RATIOS = (1, 6, 6, 6, 6, 6, 6)
EFFNET_KERNELS = (3, 3, 5, 3, 5, 5, 3)
EFFNET_SE_RATIO = 0.25


@dataclass
class Cost:
    """Running totals at a feature-map side ``size`` (pycls's ``cx`` dict, square images)."""

    size: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv(self, w_in: int, w_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> None:
        """A k×k convolution (pycls ``conv2d_cx``): the side shrinks to ``(size − 1) // stride + 1``."""
        self.size = (self.size - 1) // stride + 1
        outputs = w_out * self.size * self.size
        self.flops += k * k * w_in * w_out * self.size * self.size // groups + (outputs if bias else 0)
        self.params += k * k * w_in * w_out // groups + (w_out if bias else 0)
        self.acts += outputs

    def norm(self, w: int) -> None:
        """Batch-norm: its weight and bias (pycls ``norm2d_cx``)."""
        self.params += 2 * w

    def linear(self, w_in: int, w_out: int) -> None:
        """A linear layer with a bias on a pooled vector (pycls ``linear_cx``)."""
        self.flops += w_in * w_out + w_out
        self.params += w_in * w_out + w_out
        self.acts += w_out

    def squeeze_excite(self, w: int, w_se: int) -> None:
        """Squeeze-and-excitation on a pooled vector: two biased 1×1 convs (pycls ``SE.complexity``)."""
        size = self.size
        self.size = 1
        self.conv(w, w_se, 1, bias=True)
        self.conv(w_se, w, 1, bias=True)
        self.size = size


def effnet_cost(shape: Stages, resolution: int, num_classes: int = 1000) -> Cost:
    """The cost of an EfficientNet with B0's blocks and the given shape at ``resolution`` px."""
    cost = Cost(resolution)
    cost.conv(3, shape.stem, 3, stride=2)
    cost.norm(shape.stem)
    w_in = shape.stem
    for depth, w_out, exp_ratio, stride, k in zip(shape.depths, shape.widths, EFFNET_EXP_RATIOS,
                                                   EFFNET_STRIDES, EFFNET_KERNELS, strict=True):
        for _ in range(depth):
            w_exp = int(w_in * exp_ratio)
            if w_exp != w_in:
                cost.conv(w_in, w_exp, 1)
                cost.norm(w_exp)
            cost.conv(w_exp, w_exp, k, stride=stride, groups=w_exp)
            cost.norm(w_exp)
            cost.squeeze_excite(w_exp, int(w_in * EFFNET_SE_RATIO))
            cost.conv(w_exp, w_out, 1)
            cost.norm(w_out)
            stride, w_in = 1, w_out
    assert shape.head is not None
    cost.conv(w_in, shape.head, 1)
    cost.norm(shape.head)
    cost.linear(shape.head, num_classes)
    return cost
