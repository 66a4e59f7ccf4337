"""Multi-process training on any backend: BasicSR's ``--launcher pytorch|slurm`` without its
NCCL and CUDA assumptions.

BasicSR 1.4.2's ``init_dist`` hard-codes ``nccl`` and calls ``torch.cuda.set_device``, and its
``model_to_device`` passes a CUDA device to ``DistributedDataParallel``; on a CPU machine all
three fail. Here the backend is ``RTSR_DIST_BACKEND`` (environment), else the option file's
``dist_backend`` (or BasicSR's ``dist_params.backend``), else ``nccl`` when the run uses CUDA and
``gloo`` otherwise; the CUDA device is set only when there is one.
"""
import os
import subprocess

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ['BACKEND_ENV', 'choose_backend', 'init_dist', 'wrap_ddp', 'broadcast_modules', 'average_gradients']

BACKEND_ENV = 'RTSR_DIST_BACKEND'


def choose_backend(opt):
    """The process-group backend for the option dict ``opt`` (see the module docstring)."""
    backend = os.environ.get(BACKEND_ENV) or opt.get('dist_backend') or (opt.get('dist_params') or {}).get('backend')
    if backend:
        return str(backend)
    uses_cuda = torch.cuda.is_available() and opt.get('num_gpu', 1) not in (0, '0')
    return 'nccl' if uses_cuda else 'gloo'


def _set_cuda_device(local_rank):
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def init_dist(launcher, backend='gloo', port=None):
    """Drop-in for ``basicsr.utils.dist_util.init_dist`` with a working ``backend`` on CPU."""
    if launcher == 'pytorch':  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT
        _set_cuda_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])))
        dist.init_process_group(backend=backend)
    elif launcher == 'slurm':
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        local_rank = int(os.environ.get('SLURM_LOCALID', proc_id))
        addr = subprocess.getoutput(f"scontrol show hostname {os.environ['SLURM_NODELIST']} | head -n1")
        os.environ['MASTER_PORT'] = str(port) if port is not None else os.environ.get('MASTER_PORT', '29500')
        os.environ.update(MASTER_ADDR=addr, WORLD_SIZE=str(ntasks), LOCAL_RANK=str(local_rank), RANK=str(proc_id))
        _set_cuda_device(local_rank)
        dist.init_process_group(backend=backend)
    else:
        raise ValueError(f'--launcher: {launcher!r} is not one of: pytorch, slurm')


def wrap_ddp(net, device, find_unused_parameters=False):
    """``net`` on ``device`` inside ``DistributedDataParallel`` (device ids only for CUDA)."""
    net = net.to(device)
    device_ids = [torch.cuda.current_device()] if device.type == 'cuda' else None
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def broadcast_modules(modules):
    """Give every rank rank 0's parameters and buffers of ``modules`` (trained outside DDP)."""
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(modules):
    """Average the gradients of ``modules``' parameters over the ranks (what DDP does for its net)."""
    world = dist.get_world_size()
    for module in modules:
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad.div_(world)
