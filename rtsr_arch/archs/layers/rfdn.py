"""RFDN (Liu, Tang, Wu, "Residual Feature Distillation Network for Lightweight Image
Super-Resolution", ECCV Workshops 2020): its residual feature distillation block and its trunk,
shared by RFDN (the NTIRE 2023 ESR baseline) and PRFDN (team SEU_CNII's widened RFDN), official
key names (``ofsoundof/NTIRE2023_ESR:models/team00_RFDN.py``)."""
import torch
from torch import nn

from .activations import PARAMETER_FREE_ACTIVATIONS, make_activation
from .attention import ESA
from .residual_trunk import ResidualTrunk
from .upsamplers import conv_pixel_shuffle

__all__ = ['RFDB', 'RFDNTrunk', 'RFDN_ACTIVATIONS', 'RFDN_MODULES']

# one activation module serves features of two widths (C and C // 2), as in the official block:
# a per-channel PReLU cannot, so it is not offered
RFDN_ACTIVATIONS = PARAMETER_FREE_ACTIVATIONS
# the top-level modules besides the blocks B1..Bn
RFDN_MODULES = ('fea_conv', 'c', 'LR_conv', 'upsampler')


def _conv(cin, cout, k):
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class RFDB(nn.Module):
    """Residual feature distillation block (RFDN paper §3.2, Fig. 3; official ``RFDB``).

    Three stages on the running features r (r_0 = the block input): distilled_i = act(c{i}_d(r))
    (1x1, C -> C/2) and r_i = act(c{i}_r(r) + r) (3x3 shallow residual block, C -> C); then
    act(c4(r_3)) (3x3, C -> C/2); the four C/2 maps are concatenated, fused by c5 (1x1, 2C -> C)
    and gated by RFDN's ESA (``variant='rfdn'``). One activation module (``act``) serves every
    call, as the official block. (The official ``distillation_rate`` argument is ignored there:
    the distilled width is always C // 2.)
    """

    def __init__(self, num_feat, esa_channels, act_type='lrelu'):
        super().__init__()
        dc = num_feat // 2
        for i in (1, 2, 3):
            setattr(self, f'c{i}_d', _conv(num_feat, dc, 1))
            setattr(self, f'c{i}_r', _conv(num_feat, num_feat, 3))
        self.c4 = _conv(num_feat, dc, 3)
        self.act = make_activation(act_type, num_feat)
        self.c5 = _conv(4 * dc, num_feat, 1)
        self.esa = ESA(num_feat, esa_channels, variant='rfdn')

    def forward(self, x):
        distilled = []
        r = x
        for i in (1, 2, 3):
            distilled.append(self.act(getattr(self, f'c{i}_d')(r)))
            r = self.act(getattr(self, f'c{i}_r')(r) + r)
        distilled.append(self.act(self.c4(r)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


class RFDNTrunk(ResidualTrunk):
    """RFDN's trunk (paper §3.1, Fig. 2), computing on [0, 255] images like the official network:
    ``fea_conv`` (3x3) -> B1..Bn RFDBs in a chain -> ``c`` (1x1 over the concatenation of every
    block's output, + activation) -> ``LR_conv`` (3x3) + fea_conv's output -> ``upsampler`` (3x3
    conv to C_out·s² channels, PixelShuffle(s)); built by :meth:`add_rfdn_trunk`."""

    trunk_names = ('fea_conv', 'LR_conv', 'upsampler')
    block_prefix = 'B'
    img_range = 255.0

    def add_rfdn_trunk(self, num_in_ch, num_out_ch, num_feat, num_block, upscale, act_type, esa_channels):
        self.fea_conv = _conv(num_in_ch, num_feat, 3)
        self.add_blocks([RFDB(num_feat, esa_channels, act_type) for _ in range(num_block)])
        self.c = nn.Sequential(_conv(num_block * num_feat, num_feat, 1), make_activation(act_type, num_feat))
        self.LR_conv = _conv(num_feat, num_feat, 3)
        self.upsampler = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def body(self, fea):
        return self.c(torch.cat(self.block_outputs(fea), dim=1))
