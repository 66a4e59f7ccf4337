"""RTSRModel: BasicSR's SRModel with what the real-time SR recipes train with.

LRSRN (paper §3.3, official ``Ganzooo/LRSRN``) trains with AMP, gradient clipping and a
restarting cosine schedule, then fine-tunes with L2; RT4KSR (paper §3.2) adds its
high-frequency loss; the AIS 2024 entries add FFT/gradient losses and distillation
(:class:`~rtsr_arch.models.kd_model.KDModel`). Everything is optional and off by default, so an
SRModel option file runs unchanged with ``model_type: RTSRModel``.

``train:`` keys added to SRModel's:

- ``losses``: a list of registered losses, each ``{type, loss_weight, ..., name}`` (``name`` is
  the log key, default ``l_<type>``: ``L1Loss`` -> ``l_l1``); ``pixel_opt`` / ``perceptual_opt``
  still work (``l_pix``, ``l_percep``, ``l_style``).
- ``optim_g.type``: any ``torch.optim`` optimizer by name (Adam, AdamW, SGD, ...).
- ``scheduler.type``: anything :func:`~rtsr_arch.models.lr_scheduler.build_scheduler` knows
  (the LRSRN ``CosineRestartCyclesLR``, ``CosineWarmupLR``, BasicSR's, torch's); stepped per
  iteration.
- ``mixed_precision``: ``fp16`` (autocast + a GradScaler saved in the resume states) or ``bf16``;
  ``fp16`` without CUDA trains in ``bf16`` on CPUs with native bf16, else in float32 (one warning
  line: fp16 autocast on a CPU is ~200x slower, bf16 without native support ~12x).
- ``channels_last``: run the network and batches in channels-last memory format.
- ``grad_clip``: maximum total gradient norm (the norm is logged as ``grad_norm``).
- ``max_nonfinite``: consecutive non-finite steps tolerated (default 10): each is skipped with a
  warning, one more stops training with an error.
- ``deploy_export``: save the reparameterized network ``models/net_g_deploy_<iter>.pth`` (from
  EMA when present, checked against the training form) with every checkpoint; default true for
  architectures with a ``deploy`` option. ``deploy_safetensors: true`` also writes it as
  ``.safetensors``.

Every saved network records its ``network_g`` options, so :func:`rtsr_arch.load_model` reads it
without an option file.

``val.deploy: true`` validates the reparameterized network instead of the training form.

Checkpoints and training states are written atomically; a training state also holds the
networks (``net_g``, EMA), the grad scaler and the skip counter, and what ``rtsr-train``'s loop
sets as :attr:`loop_state` (data position, random states, curves), so ``--auto_resume`` continues
exactly where the state was saved.

Multi-process (``--launcher pytorch|slurm``): ``net_g`` is wrapped in DDP on CPU too
(:mod:`rtsr_arch.utils.distributed`); modules trained outside it (loss parameters, KD adapters)
start from rank 0's values and have their gradients averaged; the EMA, checkpoints, states and
deploy exports are rank 0's.
"""
import inspect
import re
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from ..inference import upscale_tensor
from ..loader import save_checkpoint
from ..utils.checkpoint import atomic_save, load_state_dict_checked
from ..utils.deploy import deploy_state_dict
from ..utils.distributed import average_gradients, broadcast_modules, wrap_ddp
from ..utils.options import build_network
from .lr_scheduler import build_scheduler

__all__ = ['RTSRModel', 'AUTOCAST_DTYPES', 'FP16_DEVICES', 'cpu_has_native_bf16', 'loss_log_name', 'supports_deploy',
           'check_choice']

AUTOCAST_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
FP16_DEVICES = ('cuda',)  # where fp16 autocast trains at speed; elsewhere fp16 falls back (bf16 or float32)


def cpu_has_native_bf16():
    """Whether this CPU computes bf16 natively (AVX512-BF16 / AMX); without it bf16 autocast is
    slower than float32 (measured 12x on an AVX2 CPU)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def loss_log_name(loss_opt):
    """The log key of a ``train.losses`` entry: its ``name``, else ``l_`` + the snake-cased type
    without the ``Loss`` suffix (``L1Loss`` -> ``l_l1``, ``HFLoss`` -> ``l_hf``)."""
    if loss_opt.get('name'):
        return str(loss_opt['name'])
    stem = re.sub(r'Loss$', '', loss_opt['type'])
    return 'l_' + re.sub(r'(?<=[a-z0-9])(?=[A-Z])', '_', stem).lower()


def supports_deploy(network_opt):
    """Whether the registered architecture of ``network_opt`` has a ``deploy`` switch."""
    cls = ARCH_REGISTRY.get(network_opt['type'])
    return 'deploy' in inspect.signature(cls).parameters and not network_opt.get('deploy')


def check_choice(value, choices, key):
    """``value`` if it is one of ``choices``; else a one-line ValueError naming ``key``."""
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of: {', '.join(map(str, choices))}")
    return value


@MODEL_REGISTRY.register()
class RTSRModel(SRModel):
    """SRModel plus mixed precision, clipping, loss lists, any optimizer/scheduler, deploy export."""

    channels_last = False  # training settings; test-only models keep these defaults
    deploy_export = False
    _eval_net = None
    _deploy_cache = None
    unsaved_networks = ()  # ``network_*`` keys this model never saves (resume must not look for them)
    loop_state = None  # set by rtsr_arch.training.pipeline: () -> data position, RNG states, curves

    def model_to_device(self, net):
        """BasicSR's, with ``DistributedDataParallel`` on CPU (gloo) too."""
        if self.opt['dist']:
            return wrap_ddp(net, self.device, self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    # ----------------------------------------------------------------------------- set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.amp_dtype = AUTOCAST_DTYPES.get(check_choice(train_opt.get('mixed_precision'), [None, *AUTOCAST_DTYPES],
                                                     'train.mixed_precision'))
        if self.amp_dtype == torch.float16 and self.device.type not in FP16_DEVICES:  # on a CPU ~200x slower
            self.amp_dtype = torch.bfloat16 if cpu_has_native_bf16() else None
            get_root_logger().warning(f"train.mixed_precision: fp16 needs CUDA; training in "
                                      f"{'bf16' if self.amp_dtype else 'float32'} on the CPU instead")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.channels_last = bool(train_opt.get('channels_last', False))
        self.grad_clip = train_opt.get('grad_clip')
        self.max_nonfinite = int(train_opt.get('max_nonfinite', 10))
        self.nonfinite_in_a_row = 0
        self.deploy_export = bool(train_opt.get('deploy_export', True)) and supports_deploy(self.opt['network_g'])
        self.deploy_safetensors = bool(train_opt.get('deploy_safetensors', False))
        self.net_g.train()
        if self.channels_last:
            self.net_g.to(memory_format=torch.channels_last)
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0 and self.opt['rank'] == 0:  # the EMA lives on rank 0 only (it saves and validates)
            self._init_ema()
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        self.cri_perceptual = (build_loss(train_opt['perceptual_opt']).to(self.device)
                               if train_opt.get('perceptual_opt') else None)
        self.setup_optimizers()
        self.setup_schedulers()
        if self.opt['dist']:  # trained outside DDP: same start on every rank
            broadcast_modules(self.extra_trainable_modules())

    def _init_ema(self):
        """BasicSR's EMA copy: from ``params_ema`` of the pretrained weights, else ``net_g``'s."""
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            self.model_ema(0)
        self.net_g_ema.eval()
        if self.channels_last:
            self.net_g_ema.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def model_ema(self, decay=0.999):
        """BasicSR's EMA of the parameters, plus the buffers (BatchNorm running statistics of
        training forms): floating buffers are averaged like the parameters, others copied."""
        super().model_ema(decay)
        ema_buffers = dict(self.net_g_ema.named_buffers())
        for name, buffer in self.get_bare_model(self.net_g).named_buffers():
            if name in ema_buffers:
                if buffer.is_floating_point():
                    ema_buffers[name].mul_(decay).add_(buffer, alpha=1 - decay)
                else:
                    ema_buffers[name].copy_(buffer)

    def _build_losses(self):
        """``(log name, loss module)`` pairs from ``train.losses`` (duplicate names rejected)."""
        losses = []
        for i, loss_opt in enumerate(self.opt['train'].get('losses') or []):
            if not isinstance(loss_opt, dict) or 'type' not in loss_opt:
                raise ValueError(f'train.losses[{i}]: expected a mapping with a "type"; got {loss_opt!r}')
            name = loss_log_name(loss_opt)
            if name in [n for n, _ in losses] or name in ('l_pix', 'l_percep', 'l_style', 'l_total'):
                raise ValueError(f"train.losses[{i}]: log name '{name}' is used twice; give it a distinct 'name'")
            kwargs = {k: v for k, v in loss_opt.items() if k != 'name'}
            losses.append((name, build_loss(kwargs).to(self.device)))
        return losses

    def setup_optimizers(self):
        """``optim_g`` over the trainable parameters (plus :meth:`extra_trainable_modules`'); frozen
        ones (structural constants of reparameterizable blocks) are summarized in one line."""
        self.cri_list = self._build_losses()
        if self.cri_pix is None and self.cri_perceptual is None and not self.cri_list:
            raise ValueError('train: no loss configured; set train.losses (or pixel_opt / perceptual_opt)')
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        frozen = sum(p.numel() for p in self.net_g.parameters() if not p.requires_grad)
        if frozen:
            get_root_logger().info(f'{frozen} frozen network_g parameter values are not optimized.')
        for module in self.extra_trainable_modules():
            params += list(module.parameters())
        optim_opt = dict(self.opt['train']['optim_g'])
        self.optimizer_g = self.get_optimizer(optim_opt.pop('type'), params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def extra_trainable_modules(self):
        """Modules trained with ``net_g`` but not part of it: losses with learnable parameters
        (SAFMN++'s uncertainty scale); KDModel adds its adapters."""
        return [loss for _, loss in self.cri_list if any(p.requires_grad for p in loss.parameters())]

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        cls = getattr(torch.optim, str(optim_type), None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            names = sorted(n for n, c in vars(torch.optim).items()
                           if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
            raise ValueError(f"train.optim_g.type: '{optim_type}' is not a torch.optim optimizer; available: {', '.join(names)}")
        if 'betas' in kwargs:
            kwargs['betas'] = tuple(kwargs['betas'])
        return cls(params, lr, **kwargs)

    def setup_schedulers(self):
        scheduler_opt = self.opt['train'].get('scheduler')
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group.setdefault('initial_lr', group['lr'])  # BasicSR's warm-up reads it
            if scheduler_opt:
                self.schedulers.append(build_scheduler(optimizer, scheduler_opt))

    # ----------------------------------------------------------------------------- training
    def feed_data(self, data):
        super().feed_data(data)
        if self.channels_last:
            self.lq = self.lq.contiguous(memory_format=torch.channels_last)
            if hasattr(self, 'gt'):
                self.gt = self.gt.contiguous(memory_format=torch.channels_last)

    def compute_losses(self, output):
        """Weighted losses of ``output`` (float32) against ``self.gt``, as an ordered dict."""
        losses = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_perceptual:
            percep, style = self.cri_perceptual(output, self.gt)
            if percep is not None:
                losses['l_percep'] = percep
            if style is not None:
                losses['l_style'] = style
        for name, criterion in self.cri_list:
            losses[name] = criterion(output, self.gt)
        return losses

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            self.output = self.net_g(self.lq)
        losses = self.compute_losses(self.output.float())  # losses in float32, outside autocast
        l_total = sum(losses.values())
        losses['l_total'] = l_total
        if not torch.isfinite(l_total):
            self._skip_step(current_iter, 'loss', losses)
            return
        self.scaler.scale(l_total).backward()
        if self.opt['dist']:
            average_gradients(self.extra_trainable_modules())
        self.scaler.unscale_(self.optimizer_g)
        params = [p for group in self.optimizer_g.param_groups for p in group['params'] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if not torch.isfinite(grad_norm) and not self.scaler.is_enabled():
            self._skip_step(current_iter, 'gradient', losses)
            return
        if self.grad_clip and torch.isfinite(grad_norm):
            torch.nn.utils.clip_grads_with_norm_(params, float(self.grad_clip), grad_norm)
        self.scaler.step(self.optimizer_g)  # with fp16, skipped by the scaler on inf/NaN gradients
        self.scaler.update()
        self.nonfinite_in_a_row = 0
        losses['grad_norm'] = grad_norm.detach()
        self.log_dict = self.reduce_loss_dict(losses)
        if hasattr(self, 'net_g_ema'):
            self.model_ema(decay=self.ema_decay)

    def _skip_step(self, current_iter, what, losses):
        """Skip a step with a non-finite loss or gradient; stop after ``max_nonfinite`` in a row."""
        self.optimizer_g.zero_grad(set_to_none=True)
        self.nonfinite_in_a_row += 1
        values = ', '.join(f'{k}={float(v.detach()):.4g}' for k, v in losses.items())
        if self.nonfinite_in_a_row > self.max_nonfinite:
            raise FloatingPointError(
                f'iter {current_iter}: {self.nonfinite_in_a_row} non-finite steps in a row ({what}: {values}); '
                'training stopped with the weights of the last finite step; lower the learning rate, set '
                'train.grad_clip or use bf16, then resume from the last checkpoint')
        get_root_logger().warning(f'iter {current_iter}: non-finite {what} ({values}); step skipped '
                                  f'({self.nonfinite_in_a_row}/{self.max_nonfinite} in a row)')
        self.log_dict = OrderedDict(nonfinite_skipped=float(self.nonfinite_in_a_row))

    # ----------------------------------------------------------------------------- evaluation
    def test(self):
        """``self.output`` for ``self.lq`` of any size: padded to the network's declared input
        multiple and cropped back (:func:`~rtsr_arch.inference.upscale_tensor`). The network is the
        fused one during ``val.deploy`` validation, else as BasicSR's SRModel: the EMA network when
        present, else ``net_g`` (in eval mode for the call, its mode restored after)."""
        if self._eval_net is not None:
            self.output = self._upscale_lq(self._eval_net)
            return
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        try:
            self.output = self._upscale_lq(net)
        finally:
            net.train(was_training)

    def _upscale_lq(self, net):
        return upscale_tensor(self.get_bare_model(net), self.lq, channels_last=self.channels_last)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Validate the training form (EMA when present), or with ``val.deploy`` the fused one."""
        if self.opt['val'].get('deploy') and self.deploy_export:
            self._eval_net = self.deploy_network(current_iter)
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self._eval_net = None

    def deploy_network(self, current_iter):
        """The reparameterized network (eval mode, on the model's device) of the current weights."""
        network_opt = {**self.opt['network_g'], 'deploy': True}
        net = build_network(network_opt).to(self.device).eval()
        load_state_dict_checked(net, self._deploy_weights(current_iter), 'deploy export')
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def _deploy_weights(self, current_iter):
        """Fused weights of the EMA (else ``net_g``) network, checked; cached per iteration."""
        if self._deploy_cache is None or self._deploy_cache[0] != current_iter:
            source = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
            weights = {k: v.detach().float().cpu() for k, v in source.state_dict().items()}
            fused, check = deploy_state_dict(self.opt['network_g'], weights, source=f'net_g at iter {current_iter}')
            if not check.agrees():
                raise RuntimeError(f'deploy export at iter {current_iter}: the fused network differs from the training '
                                   f'form (relative {check.rel_fp64:.3g} in float64); not saved')
            self._deploy_cache = (current_iter, fused, check)
        return self._deploy_cache[1]

    # ----------------------------------------------------------------------------- saving
    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        if self.deploy_export and self.opt['rank'] == 0:
            self.save_deploy(current_iter)

    def save_deploy(self, current_iter):
        """``models/net_g_deploy_<iter>.pth`` (and ``.safetensors`` with ``deploy_safetensors``):
        the fused weights under ``params`` with their deploy ``network_g``."""
        fused = self._deploy_weights(current_iter)
        label = 'latest' if current_iter == -1 else current_iter
        stem = f"{self.opt['path']['models']}/net_g_deploy_{label}"
        network_opt = {**self.network_opt(), 'deploy': True}
        for suffix in ('.pth', '.safetensors') if self.deploy_safetensors else ('.pth',):
            save_checkpoint(stem + suffix, fused, network_opt)
        get_root_logger().info(f'Saved the reparameterized network to {stem}.pth '
                               f'(max |fused - training| {self._deploy_cache[2].max_abs_fp32:.2e} in float32).')

    def network_opt(self):
        """The complete ``network_g`` options of the trained network (every keyword, defaults included)."""
        return getattr(self.get_bare_model(self.net_g), 'network_opt', None) or dict(self.opt['network_g'])

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's layout (``{param_key: state_dict}`` in ``models/<label>_<iter>.pth``) plus the
        ``network_g`` options for ``net_g``, atomically."""
        if self.opt['rank'] != 0:
            return
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        label = 'latest' if current_iter == -1 else current_iter
        payload = {k: self._cpu_state(n) for n, k in zip(nets, keys)}
        if net_label == 'net_g':
            payload['network_g'] = self.network_opt()
        atomic_save(payload, f"{self.opt['path']['models']}/{net_label}_{label}.pth")

    def _cpu_state(self, net):
        return OrderedDict((k.removeprefix('module.'), v.detach().cpu())
                           for k, v in self.get_bare_model(net).state_dict().items())

    def training_state(self, epoch, current_iter):
        """What a resume needs beyond BasicSR's optimizers and schedulers."""
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers],
                 'scaler': self.scaler.state_dict(), 'nonfinite_in_a_row': self.nonfinite_in_a_row,
                 'networks': {'net_g': self._cpu_state(self.net_g)}}
        if hasattr(self, 'net_g_ema'):
            state['networks']['net_g_ema'] = self._cpu_state(self.net_g_ema)
        for name, module in self.extra_state_modules().items():
            state['networks'][name] = self._cpu_state(module)
        if self.loop_state is not None:
            state['loop'] = self.loop_state()
        return state

    def extra_state_modules(self):
        """Modules saved only in training states, by name: losses with parameters (and KD adapters)."""
        return {f'loss_{name}': loss for name, loss in self.cri_list if any(True for _ in loss.parameters())}

    def save_training_state(self, epoch, current_iter):
        if current_iter == -1 or self.opt['rank'] != 0:
            return
        atomic_save(self.training_state(epoch, current_iter),
                    f"{self.opt['path']['training_states']}/{current_iter}.state")

    def resume_training(self, resume_state):
        super().resume_training(resume_state)  # optimizers and schedulers
        if 'scaler' in resume_state:
            self.scaler.load_state_dict(resume_state['scaler'])
        self.nonfinite_in_a_row = resume_state.get('nonfinite_in_a_row', 0)
        modules = {'net_g': self.get_bare_model(self.net_g), **self.extra_state_modules()}
        if hasattr(self, 'net_g_ema'):
            modules['net_g_ema'] = self.net_g_ema
        for name, state in resume_state.get('networks', {}).items():
            if name in modules:
                load_state_dict_checked(modules[name], state, f'resume state ({name})')

