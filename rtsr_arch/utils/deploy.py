"""Training -> deploy conversion of a network's weights, checked on a random input.

The one conversion-with-check of the package: ``rtsr-reparam`` (``tools/reparam_ckpt.py``) and
RTSRModel's deploy export both call :func:`deploy_model` / :func:`deploy_state_dict`.
"""
import copy
import math
from dataclasses import dataclass

import torch

from ..archs.rep import reparameterize
from .checkpoint import CheckpointError, load_state_dict_checked
from .options import build_network

__all__ = ['DeployCheck', 'deploy_model', 'deploy_state_dict', 'deploy_options']


@dataclass
class DeployCheck:
    """How far the deploy form is from the training form on a random input."""
    max_abs_fp64: float
    rel_fp64: float
    max_abs_fp32: float

    def agrees(self, rtol=1e-8):
        """Fusion algebra is exact: in float64 the two forms agree to ``rtol`` of the output scale."""
        return self.rel_fp64 <= rtol


def deploy_options(network_opt):
    """The ``network_g`` of the deploy form: ``network_opt`` with ``deploy: true``."""
    return {**network_opt, 'deploy': True}


def _max_abs(a, b):
    return float((a - b).abs().max())


def _check_size(net, size):
    """``size`` rounded up to the network's ``input_multiple`` and at least its ``min_input_size``."""
    multiple = int(getattr(net, 'input_multiple', 1) or 1)
    size = max(size, int(getattr(net, 'min_input_size', 1) or 1))
    return multiple * math.ceil(size / multiple)


@torch.no_grad()
def deploy_model(network_opt, state_dict, source='checkpoint', size=48, seed=0):
    """Reparameterize the weights ``state_dict`` of the network described by ``network_opt``.

    Returns ``(deploy network, DeployCheck)``: the network (float32, eval mode) is
    ``rtsr_arch.reparameterize`` applied to a deep copy of the loaded training form, and is
    checked to load strictly into ``build_network(deploy_options(network_opt))`` (what a user of
    the deploy checkpoint builds). The check runs both forms on one random input of ``size`` x
    ``size`` pixels (rounded up to the network's ``input_multiple``), in float64 (the merge
    itself: a float64 copy is fused and compared) and in float32 (the saved weights, as users run
    them). A deploy-form ``network_opt`` or checkpoint, and a checkpoint that does not match the
    architecture, raise :class:`CheckpointError` with a one-line message.
    """
    if network_opt.get('deploy'):
        raise CheckpointError(f'{source}: network_g.deploy is already true; nothing to reparameterize')
    train_net = build_network(network_opt, f'{source}: network_g').eval()
    try:
        load_state_dict_checked(train_net, state_dict, source)
    except CheckpointError:
        deployed_keys = set(reparameterize(build_network(network_opt)).state_dict())
        if set(state_dict) == deployed_keys:
            raise CheckpointError(f'{source}: already in deploy form (its keys are those of the reparameterized '
                                  f'network)') from None
        raise
    train_net.float()
    fused = reparameterize(copy.deepcopy(train_net)).eval()
    load_state_dict_checked(build_network(deploy_options(network_opt), f'{source}: network_g'), fused.state_dict(),
                            f'{source} (fused)')

    num_in_ch = getattr(train_net, 'network_opt', network_opt).get('num_in_ch', 3)
    side = _check_size(train_net, size)
    x = torch.rand(1, num_in_ch, side, side, generator=torch.Generator().manual_seed(seed))
    train64 = copy.deepcopy(train_net).double()
    y64 = train64(x.double())
    d64 = reparameterize(train64)(x.double())
    scale = max(float(y64.abs().max()), 1e-30)
    check = DeployCheck(max_abs_fp64=_max_abs(y64, d64), rel_fp64=_max_abs(y64, d64) / scale,
                        max_abs_fp32=_max_abs(train_net(x), fused(x)))
    return fused, check


def deploy_state_dict(network_opt, state_dict, source='checkpoint', size=48, seed=0):
    """:func:`deploy_model`, returning ``(deploy state dict, DeployCheck)``."""
    fused, check = deploy_model(network_opt, state_dict, source, size, seed)
    return fused.state_dict(), check
