"""FMEN's residual-in-residual reparameterizable block (RRRB), RT4KSR's "RRB" (RT4KSR paper, Fig. 3b)."""
from .rrrb_conv import RRRBConv

__all__ = ['RRRB']


class RRRB(RRRBConv):
    """Expand 1x1 -> 3x3 (+ inner identity) -> reduce 1x1 (+ outer identity); deploys to one 3x3:
    :class:`~rtsr_arch.archs.rep.RRRBConv` with equal input and output widths.

    The expand conv zero-pads its *input*, so the 3x3 sees the expand bias on its border — the
    "bias padding" that makes the fusion exact on border pixels (Du et al., FMEN, CVPRW 2022, §3).
    Attribute names follow the official FMEN / RT4KSR code: ``expand_conv``, ``fea_conv``,
    ``reduce_conv``; deploy conv ``rep_conv``.

    Args:
        channels: input and output features.
        ratio: expansion ratio of the inner feature (2 in FMEN and RT4KSR); inner width
            ``int(ratio * channels)``.
        act_type: activation after the block (RT4KSR puts its activations outside: 'linear').
        deploy: build the fused form directly.
        bias: with False every conv (the expand conv included: its bias padding is then zero
            padding) and the fused ``rep_conv`` are bias-free.
    """

    def __init__(self, channels, ratio=2, act_type='linear', deploy=False, bias=True):
        self._check_count('channels', channels)
        super().__init__(channels, channels, ratio, act_type, deploy, bias)
