"""The forward of RLFN's residual local feature block (RLFB; Kong et al., "Residual Local Feature
Network for Efficient Super-Resolution", CVPRW 2022, §3.1, Fig. 2b), shared by the blocks built
from it: RLFN's ``RLFB``, DIPNet's ``RRFB`` (reparameterizable convs), DLFAN's ``DALFB`` (LEDBB
convs), LMRLFN's ``LMRLFB`` (FMEN's HFAB as the attention)."""
from torch import nn

__all__ = ['LocalFeatureBlock']


class LocalFeatureBlock(nn.Module):
    """``attention(c5(act(c3_r(act(c2_r(act(c1_r(x)))))) + x))``: three 3x3 convs C -> mid -> mid
    -> C, each activated by the one module ``act`` (called three times, as the official block, so
    the NTIRE ESR counter counts each call), the block input added, a 1x1 ``c5``, then the
    attention registered under ``attention_name`` (``esa``; LMRLFN: ``hfab``).

    A subclass builds the convs with :meth:`add_convs` (plain or reparameterizable, under the
    official keys), then ``c5``, the attention and ``act``."""

    attention_name = 'esa'

    def add_convs(self, num_feat, mid_channels, conv):
        """``c1_r``, ``c2_r``, ``c3_r`` = ``conv(C, mid)``, ``conv(mid, mid)``, ``conv(mid, C)``."""
        self.c1_r = conv(num_feat, mid_channels)
        self.c2_r = conv(mid_channels, mid_channels)
        self.c3_r = conv(mid_channels, num_feat)

    def forward(self, x):
        r = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return getattr(self, self.attention_name)(self.c5(r + x))
