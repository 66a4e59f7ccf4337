"""Independent functional forwards of official networks, written directly on the official raw
state-dict keys with ``torch.nn.functional`` only (no ``rtsr_arch`` import), as ground truth for
the checkpoint-import tests.

- :func:`rt4ksr_forward`: eduardzamfir/RT4KSR ``RT4KSR_Rep`` in training form (``is_train=True``,
  ``forget=False``, GELU, LayerNorm, no ECA, no residual), ``code/model/{arch,modules}.py``.
- :func:`lrsrn_deploy_forward`: Ganzooo/LRSRN ``PlainRepConv(_BlockV2)_deploy``
  (``source/models/plainRepConv.py``), every layer a ``conv3x3``.
"""
import math

import torch
from torch.nn import functional as F

ACTIVATIONS = {'relu': F.relu, 'gelu': F.gelu, 'linear': lambda x: x}


def strip_module(state_dict):
    """The state dict with DataParallel's ``module.`` prefix removed."""
    return {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def _conv(x, sd, name, padding=0):
    return F.conv2d(x, sd[f'{name}.weight'], sd[f'{name}.bias'], padding=padding)


def layer_norm_2d(x, sd, name, eps=1e-6):
    """NAFNet ``LayerNorm2d``: per pixel over channels, biased variance, eps inside the sqrt."""
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    return sd[f'{name}.weight'].view(1, -1, 1, 1) * y + sd[f'{name}.bias'].view(1, -1, 1, 1)


def rrrb(x, sd, name):
    """Official ``ResBlock`` (RRRB): 1x1 expand; the expanded map padded by one pixel whose border
    is the expand bias (``rep_utils.pad_tensor``); 3x3 valid conv + the unpadded map; 1x1 reduce
    + the block input."""
    t = _conv(x, sd, f'{name}.expand_conv')
    b0 = sd[f'{name}.expand_conv.bias'].view(1, -1, 1, 1)
    t_pad = F.pad(t, (1, 1, 1, 1), 'constant', 0)
    t_pad[:, :, :1, :] = b0
    t_pad[:, :, -1:, :] = b0
    t_pad[:, :, :, :1] = b0
    t_pad[:, :, :, -1:] = b0
    u = _conv(t_pad, sd, f'{name}.fea_conv') + t
    return _conv(u, sd, f'{name}.reduce_conv') + x


def rt4ksr_scale(state_dict, num_out_ch=3):
    """Upscale factor s from ``upsample.0`` (``num_out_ch * (2s)^2`` outputs)."""
    return math.isqrt(strip_module(state_dict)['upsample.0.weight'].shape[0] // num_out_ch) // 2


@torch.no_grad()
def rt4ksr_forward(state_dict, x):
    """Official RT4KSR_Rep forward (training form, ``forget=False``) for input ``x`` (N,3,H,W)
    with even H, W. The high-frequency branch (hf, hfb, gamma) does not reach the output with
    ``forget=False`` and is not computed."""
    sd = strip_module(state_dict)
    scale = rt4ksr_scale(sd)
    feats = _conv(F.pixel_unshuffle(x, 2), sd, 'head.0', padding=1)
    num_block = len({k.split('.')[1] for k in sd if k.startswith('body.')})
    for i in range(num_block):
        feats = F.gelu(rrrb(layer_norm_2d(feats, sd, f'body.{i}.norm'), sd, f'body.{i}.conv1'))
    feats = rrrb(layer_norm_2d(feats, sd, 'tail.0'), sd, 'tail.1')
    return F.pixel_shuffle(_conv(feats, sd, 'upsample.0', padding=1), 2 * scale)


@torch.no_grad()
def lrsrn_deploy_forward(state_dict, x, act_type='relu'):
    """Official LRSRN deploy forward: y0 = act(head(x)); y = act(backbone_i(...)) for each block;
    out = PixelShuffle(s)(transition(y + y0)), s from the transition's output channels."""
    sd = strip_module(state_dict)
    act = ACTIVATIONS[act_type]
    y0 = act(_conv(x, sd, 'head.conv3x3', padding=1))
    y = y0
    num_block = len({k.split('.')[1] for k in sd if k.startswith('backbone.')})
    for i in range(num_block):
        y = act(_conv(y, sd, f'backbone.{i}.conv3x3', padding=1))
    out = _conv(y + y0, sd, 'transition.0.conv3x3', padding=1)
    scale = math.isqrt(out.shape[1] // x.shape[1])
    return F.pixel_shuffle(out, scale)
