"""Training -> deploy conversion of a network's weights, checked on a random input."""
import copy
from dataclasses import dataclass

import torch

from ..archs.rep import reparameterize
from .checkpoint import CheckpointError, load_state_dict_checked
from .options import build_network

__all__ = ['DeployCheck', 'deploy_state_dict']


@dataclass
class DeployCheck:
    """How far the deploy form is from the training form on a random input."""
    max_abs_fp64: float
    rel_fp64: float
    max_abs_fp32: float

    def agrees(self, rtol=1e-8):
        """Fusion algebra is exact: in float64 the two forms agree to ``rtol`` of the output scale."""
        return self.rel_fp64 <= rtol


def _max_abs(a, b):
    return float((a - b).abs().max())


@torch.no_grad()
def deploy_state_dict(network_opt, state_dict, source='checkpoint', size=48, seed=0):
    """Reparameterize the weights ``state_dict`` of the network described by ``network_opt``.

    Returns ``(deploy_state_dict, DeployCheck)``. The check runs both forms, in eval mode, on one
    random input of ``size`` x ``size`` pixels, in float64 (the merge itself: a float64 copy is
    fused and compared) and in float32 (the saved weights, as users run them). A deploy-form
    ``network_opt`` or checkpoint, and a checkpoint that does not match the architecture, raise
    :class:`CheckpointError` with a one-line message.
    """
    if network_opt.get('deploy'):
        raise CheckpointError(f'{source}: network_g.deploy is already true; nothing to reparameterize')
    train_net = build_network(network_opt)
    deploy_net = build_network({**network_opt, 'deploy': True})
    if set(state_dict) == set(deploy_net.state_dict()) and set(state_dict) != set(train_net.state_dict()):
        raise CheckpointError(f'{source}: already in deploy form (its keys are those of the reparameterized network)')
    load_state_dict_checked(train_net, state_dict, source)
    train_net.eval()
    fused = reparameterize(copy.deepcopy(train_net))
    load_state_dict_checked(deploy_net, fused.state_dict(), f'{source} (fused)')

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, network_opt.get('num_in_ch', 3), size, size, generator=generator)
    y32, d32 = train_net(x), deploy_net.eval()(x)
    train64 = copy.deepcopy(train_net).double()
    y64, d64 = train64(x.double()), reparameterize(train64)(x.double())
    check = DeployCheck(max_abs_fp64=_max_abs(y64, d64), rel_fp64=_max_abs(y64, d64) / float(y64.abs().max()),
                        max_abs_fp32=_max_abs(y32, d32))
    return fused.state_dict(), check
