"""RTSRN: the baseline of the NTIRE 2023 Real-Time Super-Resolution challenge (Conde, Zamfir,
Timofte et al., "Efficient Deep Models for Real-Time 4K Image Super-Resolution. NTIRE 2023 Benchmark
and Report", CVPRW 2023), after the Mobile AI & AIM 2022 quantized-SR entries. Official code:
eduardzamfir/NTIRE23-RTSR@2bc37ba ``demo/models/rtsrn.py`` (``RealTimeSRNet``, ``rtsrn(scale)``;
Apache-2.0). No official weights are published."""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .contract import Int, OneOf, SRArch
from .layers import ACTIVATIONS, conv_pixel_shuffle, make_activation
from .official import (OfficialImport, OfficialImportError, infer_upscale, register_importer, top_level_names,
                       unstored_note)

__all__ = ['RTSRN']


@ARCH_REGISTRY.register()
class RTSRN(SRArch):
    """RTSRN (the organisers' baseline, NTIRE23-RTSR README "Performance of baseline methods"):
    ``res = head(x)`` (3x3 conv), ``body`` = ``num_block`` 3x3 convs with an activation after each
    but the last, output ``upsample(res + body(res))`` with ``upsample`` = 3x3 conv to
    ``num_out_ch * upscale**2`` channels + PixelShuffle. No activation after the head, no global
    image skip, no clamp. ``rtsrn(scale)`` is C64, 5 body convs, ReLU (the defaults).

    A plain network: nothing to reparameterize, ``deploy`` is accepted and it is its own deploy
    form. Keys are the official ``nn.Sequential`` indices: ``head.0``, ``body.{0,2,4,6,8}`` (the
    activations sit at the odd indices; with ``act_type='prelu'`` their slopes are
    ``body.{1,3,5,7}.weight``) and ``upsample.0``.

    Args:
        num_in_ch, num_out_ch: image channels (the official ``num_channels`` is both).
        num_feat: feature channels (official ``num_feats``, 64).
        num_block: 3x3 convs in the body (official ``num_blocks``, 5).
        upscale: 2, 3 or 4.
        act_type: activation after the first ``num_block - 1`` body convs ('relu').
        deploy: accepted for the contract; the network has a single form.
    """

    paper = ('Conde, Zamfir, Timofte et al., Efficient Deep Models for Real-Time 4K Image Super-Resolution. '
             'NTIRE 2023 Benchmark and Report, CVPRW 2023 (challenge baseline)')
    code = 'eduardzamfir/NTIRE23-RTSR@2bc37ba'
    license = 'Apache-2.0'

    def __init__(self, num_in_ch: Int(1) = 3, num_out_ch: Int(1) = 3, num_feat: Int(1) = 64, num_block: Int(1) = 5,
                 upscale: OneOf(2, 3, 4) = 2, act_type: OneOf(*ACTIVATIONS) = 'relu', deploy: bool = False):
        super().__init__()
        self.upscale = upscale
        self.deploy = deploy
        self.receptive_radius = num_block + 2  # one 3x3 conv each: head, body, upsample
        self.head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, padding=1))
        body = []
        for i in range(num_block):
            body.append(nn.Conv2d(num_feat, num_feat, 3, padding=1))
            if i < num_block - 1:
                body.append(make_activation(act_type, num_feat))
        self.body = nn.Sequential(*body)
        self.upsample = conv_pixel_shuffle(num_feat, num_out_ch, upscale)

    def forward(self, x):
        res = self.head(x)
        return self.upsample(res + self.body(res))


# ----------------------------------------------------------------------------- official checkpoints

def _body_indices(sd):
    """{index: {suffix: tensor}} of the ``body.<i>.<suffix>`` keys."""
    found = {}
    for key, value in sd.items():
        if key.startswith('body.'):
            index, suffix = key[5:].split('.', 1)
            found.setdefault(int(index), {})[suffix] = value
    return found


def _rtsrn_layout(sd):
    """``(num_block, act_has_params, consecutive)`` of an RTSRN state dict, or None.

    Accepted: exactly ``head.0``, ``upsample.0`` (weight and bias, 3x3, matching widths) and body
    3x3 C->C convs at ``0, 2, ..., 2(n-1)`` with nothing or a per-channel PReLU weight at every odd
    index ``1, ..., 2n-3`` (the official layout since 9f97c35), or body convs at ``0, 1, ..., n-1``
    (n >= 2; the official code before 9f97c35, whose body had no activation)."""
    if top_level_names(sd) != {'head', 'body', 'upsample'}:
        return None
    if set(k for k in sd if not k.startswith('body.')) != {'head.0.weight', 'head.0.bias', 'upsample.0.weight',
                                                           'upsample.0.bias'}:
        return None
    head, up = sd['head.0.weight'], sd['upsample.0.weight']
    if head.dim() != 4 or tuple(head.shape[2:]) != (3, 3) or up.dim() != 4 or tuple(up.shape[2:]) != (3, 3):
        return None
    num_feat = head.shape[0]
    if up.shape[1] != num_feat or sd['head.0.bias'].shape != (num_feat,) or \
            sd['upsample.0.bias'].shape != (up.shape[0],):
        return None
    body = _body_indices(sd)

    def is_conv(entry):
        w, b = entry.get('weight'), entry.get('bias')
        return set(entry) == {'weight', 'bias'} and w.shape == (num_feat, num_feat, 3, 3) and b.shape == (num_feat,)

    def is_prelu(entry):
        return set(entry) == {'weight'} and entry['weight'].shape == (num_feat,)

    convs = sorted(i for i, e in body.items() if is_conv(e))
    others = sorted(i for i in body if i not in convs)
    n = len(convs)
    if n == 0:
        return None
    if convs == list(range(0, 2 * n, 2)):
        if others and others != list(range(1, 2 * n - 2, 2)):
            return None
        if not all(is_prelu(body[i]) for i in others):
            return None
        return n, bool(others), False
    if n >= 2 and convs == list(range(n)) and not others:
        return n, False, True
    return None


def _is_rtsrn(sd):
    return _rtsrn_layout(sd) is not None


@register_importer('RTSRN', detect=_is_rtsrn)
def import_official_rtsrn(sd, overrides):
    """State dicts of eduardzamfir/NTIRE23-RTSR ``RealTimeSRNet`` (``rtsrn(scale)``; no weights
    are published, but ``demo/sr_demo.py`` loads a raw state dict with these keys): ``head.0``,
    ``body.{0,2,...}``, ``upsample.0``. Every width, the body depth and the scale come from the
    shapes; the activation is not stored (ReLU as the official code, listed as assumed) except a
    PReLU's slopes. Checkpoints of the official code before commit 9f97c35 (24 Feb 2023), whose body
    had no ReLU (``if i > num_blocks``) and hence consecutive keys ``body.{0,1,2,3,4}``, are
    renumbered and imported with ``act_type='linear'``, which is what that code computed."""
    num_block, prelu, consecutive = _rtsrn_layout(sd)
    sd = dict(sd)
    notes, assumed = [], []
    if consecutive:
        sd = {(f'body.{2 * int(k.split(".")[1])}.{k.split(".", 2)[2]}' if k.startswith('body.') else k): v
              for k, v in sd.items()}
        act_type = 'linear'
        notes.append('act_type: linear; consecutive body keys are the official code before 9f97c35 '
                     '(24 Feb 2023), whose body had no ReLU (its first version, f97dc1c, also lacked the '
                     "upsample conv's padding: that output is not reproduced)")
        if overrides.get('act_type', 'linear') != 'linear':
            raise OfficialImportError(f"act_type={overrides['act_type']!r}: this checkpoint's body has no activation "
                                      f"(consecutive body keys), only 'linear' fits")
    elif prelu:
        act_type = 'prelu'
    else:
        act_type = overrides.get('act_type', 'relu')
        if 'act_type' not in overrides:
            assumed.append('act_type')
            notes.append(unstored_note('act_type', "the official 'relu'"))
    num_feat, num_in_ch = sd['head.0.weight'].shape[:2]
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    opt = dict(type='RTSRN', num_in_ch=int(num_in_ch), num_out_ch=num_out_ch, num_feat=int(num_feat),
               num_block=num_block, upscale=infer_upscale(sd['upsample.0.weight'].shape[0], num_out_ch),
               act_type=act_type, deploy=False)
    if 'deploy' not in overrides:
        assumed.append('deploy')
        notes.append('deploy: RTSRN has a single form (nothing to reparameterize); the flag only records '
                     'whether reparameterize() was called, using false')
    opt.update({k: v for k, v in overrides.items() if k != 'act_type'})
    return OfficialImport(sd, opt, notes, tuple(assumed))
