"""Uncertainty-based MSE: the Gaussian negative log-likelihood with a learned scale.

SAFMN++ (team VPEG, AIS 2024 RTSR survey §3.3, Conde et al., CVPRW 2024) "is trained by minimizing
a combination of the uncertainty-based MSE loss [16, 14] and FFT-based L1 loss [5]". [16] is
Hamilton, Shelhamer, Freeman, "It Is Likely That Your Loss Should be a Likelihood" (arXiv
2007.06059): keep the scale of the normal likelihood behind the squared error as a parameter and
optimize it with the model, either one global scale or a scale predicted per element. [14] is
FeatUp (Fu et al., ICLR 2024), whose reconstruction loss is exactly that with a predicted
per-pixel scale::

    L = mean( (pred - target)^2 / (2 s^2) + log s ),   s = max(exp(ScaleNet(target) + 0.1), 1e-4)

where ``ScaleNet`` is a 1x1 conv (channels -> 1, with bias, initialized to 0.1x PyTorch's default)
applied to the *target* (FeatUp's ``train_jbu_upsampler.py`` / ``train_implicit_upsampler.py``:
``scales = scale_net(lr_jit_feats)``, the features being reconstructed). The squared error is
weighted by 1 / (2 s^2) and ``log s`` keeps s from growing: pixels the model cannot fit get a
larger s (a lower weight) at a log cost; for a fixed residual the optimal s^2 is the local mean
squared error. The FFT term [5] is :class:`~rtsr_arch.losses.frequency_loss.FFTLoss` with
``onesided: true`` (the ``rfft2`` L1 loss of sunny2109/SAFMN's BasicSR, ``basicsr/losses/losses.py``);
its weight is not published for SAFMN++ (SAFMN's official recipes use 0.05).

The survey gives no formula, weight or scale parameterization; this module implements the two
cited forms: ``scale='predicted'`` (FeatUp, the default) and ``scale='global'`` (one learned
scalar, Hamilton et al.'s "global" likelihood parameter). A network that predicts its own
uncertainty map can pass it instead: ``loss(pred, target, scale=s)``.

How it fits ``RTSRModel``'s ``train.losses`` (which calls ``loss(output, gt)``): the scale comes
from the target (or is global), so no extra network output is needed and the SR network, its
checkpoints and its deploy form are unchanged (the released ``light_safmnpp.pth`` holds only the
image network). But the loss has parameters (4 for 'predicted' on RGB, 1 for 'global') that must
be optimized with the network: they have to be in the optimizer (and in training states, to
resume). A loss whose parameters are not being optimized would silently degrade to a fixed,
scaled MSE, so :class:`UncertaintyMSELoss` raises after ``patience`` consecutive training calls
in which its parameters carry an unconsumed gradient and did not change.
"""
import torch
from torch import nn

from basicsr.losses.loss_util import weight_reduce_loss
from basicsr.utils.registry import LOSS_REGISTRY

from .spatial_loss import check_reduction

__all__ = ['UncertaintyMSELoss', 'ScaleNet', 'gaussian_nll']

SCALE_MODES = ('predicted', 'global')


def gaussian_nll(pred, target, scale):
    """Element-wise ``(pred - target)^2 / (2 scale^2) + log(scale)`` (the normal negative
    log-likelihood without its constant ``log sqrt(2 pi)``); ``scale`` broadcasts."""
    return (pred - target).square() / (2 * scale.square()) + torch.log(scale)


class ScaleNet(nn.Module):
    """FeatUp's uncertainty head: ``max(exp(conv1x1(x) + offset), min_scale)``, one scale map
    (N, 1, H, W) shared by the channels; the conv starts at 0.1x PyTorch's default init."""

    def __init__(self, in_channels=3, offset=0.1, min_scale=1e-4, kernel_size=1):
        super().__init__()
        self.net = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.net.weight.mul_(0.1)
            self.net.bias.mul_(0.1)
        self.offset = offset
        self.min_scale = min_scale

    def forward(self, x):
        return torch.exp(self.net(x) + self.offset).clamp_min(self.min_scale)


@LOSS_REGISTRY.register()
class UncertaintyMSELoss(nn.Module):
    """Uncertainty-based MSE (SAFMN++'s pixel loss; see the module docstring):
    ``loss_weight * reduce((pred - target)^2 / (2 s^2) + log s)``.

    Args:
        loss_weight: multiplier.
        reduction: 'mean' (default), 'sum' or 'none' (BasicSR's); with an element-wise
            ``weight`` 'mean' is the weighted mean, as BasicSR's MSELoss.
        scale: 'predicted' (FeatUp: s from a 1x1 conv on the target, per pixel) or 'global'
            (one learned scalar s).
        in_channels: image channels the ScaleNet reads ('predicted').
        offset: added before the exponential ('predicted'), and the initial log s ('global') (0.1, FeatUp's).
        min_scale: lower bound of s (1e-4, FeatUp's).
        kernel_size: of the ScaleNet conv (1, FeatUp's).
        check_optimized: raise when the parameters are evidently not being optimized.
        patience: consecutive training calls with an unconsumed gradient and unchanged
            parameters before raising (gradient accumulation over more steps needs a larger value).

    ``forward(pred, target, weight=None, scale=None)``: ``scale`` (positive, broadcastable to
    ``pred``) replaces the loss's own scale, e.g. an uncertainty map predicted by the network.
    Inputs in half precision are computed in float32.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', scale='predicted', in_channels=3, offset=0.1,
                 min_scale=1e-4, kernel_size=1, check_optimized=True, patience=20):
        super().__init__()
        if scale not in SCALE_MODES:
            raise ValueError(f'UncertaintyMSELoss: scale={scale!r}: expected one of '
                             f"{', '.join(map(repr, SCALE_MODES))}")
        self.loss_weight = loss_weight
        self.reduction = check_reduction(reduction)
        self.mode = scale
        self.min_scale = min_scale
        if scale == 'predicted':
            self.scale_net = ScaleNet(in_channels, offset, min_scale, kernel_size)
        else:
            self.log_scale = nn.Parameter(torch.tensor(float(offset)))
        self.check_optimized = check_optimized
        self.patience = int(patience)
        self._unstepped = 0
        self._snapshot = None

    def scale(self, target):
        """The scale s for ``target``: (N, 1, H, W) ('predicted') or a scalar ('global')."""
        if self.mode == 'predicted':
            return self.scale_net(target)
        return torch.exp(self.log_scale).clamp_min(self.min_scale)

    def _check_optimized(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not (self.check_optimized and self.training and params and torch.is_grad_enabled()):
            return
        values = [p.detach().clone() for p in params]
        pending = all(p.grad is not None and bool(p.grad.ne(0).any()) for p in params)
        unchanged = self._snapshot is not None and all(torch.equal(a, b) for a, b in zip(values, self._snapshot))
        self._unstepped = self._unstepped + 1 if pending and unchanged else 0
        self._snapshot = values
        if self._unstepped >= self.patience:
            raise RuntimeError(f'UncertaintyMSELoss: its {sum(p.numel() for p in params)} scale parameters have '
                               f'received gradients but not changed for {self._unstepped} training steps: they are not in the '
                               f'optimizer (add the loss parameters to it; RTSRModel must optimize loss parameters), '
                               f'so the loss would silently be a fixed, scaled MSE')

    def forward(self, pred, target, weight=None, scale=None, **kwargs):
        self._check_optimized()
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred, target = pred.float(), target.float()
        if scale is None:
            param = next(self.parameters())
            scale = self.scale(target.to(param.dtype)).to(pred.dtype)
        nll = gaussian_nll(pred, target, scale)
        return self.loss_weight * weight_reduce_loss(nll, weight, self.reduction)
