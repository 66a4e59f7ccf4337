"""KDModel: knowledge distillation from a frozen teacher into an :class:`RTSRModel` student.

Output distillation (CASR, AIS 2024 RTSR report §3.4: L1/L2 between student and teacher SR)
and feature distillation (DIPNet, NTIRE 2023 ESR report §4.1: teacher features at several
depths supervise the student's blocks, student features mapped to the teacher's channels by
learnable 1x1 convs), added to the losses against HR.

Options (besides RTSRModel's)::

    network_t: {type: LRSRN, num_feat: 64, num_block: 10, upscale: 4, act_type: gelu, ...}
                                           # optional when the checkpoint records its options
    path:
      pretrain_network_t: teacher.pth      # required: any checkpoint rtsr_arch.load_model reads
      param_key_t: params                  # optional (default: params_ema if present, else params)
      ignore_resume_networks: [network_t]  # rtsr-train adds it; BasicSR's own train.py needs it
    train:
      kd:
        teacher_dtype: fp32                # or fp16 / bf16 (teacher inference only)
        output: {criterion: l1, loss_weight: 1.0}
        features:
          - {student: backbone.0, teacher: backbone.2, criterion: l1, loss_weight: 0.1}

The teacher is frozen (no gradients, eval mode, never in the optimizer), never saved, and keeps
its weights through resumes. Adapters train with the student, are saved in the training states
(for resuming) and are dropped from the exported networks.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from ..loader import load_model
from .rtsr_model import AUTOCAST_DTYPES, RTSRModel, check_choice

__all__ = ['KDModel', 'CRITERIA', 'module_by_name']

CRITERIA = {'l1': F.l1_loss, 'l2': F.mse_loss}
TEACHER_DTYPES = {'fp32': torch.float32, **AUTOCAST_DTYPES}


def module_by_name(net, name, where):
    """``net``'s submodule called ``name``; a wrong name is a one-line error listing the names."""
    modules = dict(net.named_modules())
    if name not in modules or not name:
        names = [n for n in modules if n]
        raise ValueError(f"{where}: no module '{name}' in {type(net).__name__}; available: {', '.join(names)}")
    return modules[name]


class _FeatureTap:
    """Keeps the latest output of a module (a forward hook)."""

    def __init__(self, module):
        self.value = None
        module.register_forward_hook(self._store)

    def _store(self, module, inputs, output):
        self.value = output

    def take(self):
        value, self.value = self.value, None
        return value


@MODEL_REGISTRY.register()
class KDModel(RTSRModel):
    """RTSRModel whose student also learns from a frozen teacher's outputs and features."""

    unsaved_networks = ('network_t',)

    def init_training_settings(self):
        kd = self.opt['train'].get('kd') or {}
        self.teacher_dtype = TEACHER_DTYPES[check_choice(kd.get('teacher_dtype', 'fp32'), list(TEACHER_DTYPES),
                                                    'train.kd.teacher_dtype')]
        self.net_t = self._load_teacher()
        output = kd.get('output')
        self.kd_output = None
        if output:
            self.kd_output = (CRITERIA[check_choice(output.get('criterion', 'l1'), list(CRITERIA), 'train.kd.output.criterion')],
                              float(output.get('loss_weight', 1.0)))
        self._init_feature_pairs(kd.get('features') or [])
        if not self.kd_output and not self.feature_pairs:
            raise ValueError('train.kd: set output and/or features (nothing to distil)')
        super().init_training_settings()

    def _load_teacher(self):
        """The frozen teacher, loaded as stored (training or deploy form) by the one loader: from
        ``network_t`` when given, else from the options the checkpoint records."""
        path = self.opt['path'].get('pretrain_network_t')
        if not path:
            raise ValueError("path.pretrain_network_t: KDModel needs the trained teacher's weights")
        if not Path(path).is_file() and Path(path).name.startswith('net_t_'):
            raise ValueError(f'path.pretrain_network_t: {path} does not exist: resuming rewrote the teacher path; '
                             'add "ignore_resume_networks: [network_t]" under path (rtsr-train does this itself)')
        net = load_model(path, deploy=None, network_opt=self.opt.get('network_t'),
                         param_key=self.opt['path'].get('param_key_t'))
        net.requires_grad_(False)
        get_root_logger().info(f'Teacher {type(net).__name__} ({sum(p.numel() for p in net.parameters()):,d} '
                               f'parameters) from {path}, frozen, {self.teacher_dtype}.')
        return net.to(self.device, self.teacher_dtype)

    def _init_feature_pairs(self, features):
        """Hooks on the named student/teacher modules and a 1x1 adapter per pair, sized by a probe."""
        student = self.get_bare_model(self.net_g)
        self.feature_pairs, self.adapters = [], nn.ModuleDict()
        for i, pair in enumerate(features):
            where = f'train.kd.features[{i}]'
            if not isinstance(pair, dict) or not {'student', 'teacher'} <= pair.keys():
                raise ValueError(f'{where}: expected a mapping with "student" and "teacher" module names; got {pair!r}')
            crit = CRITERIA[check_choice(pair.get('criterion', 'l1'), list(CRITERIA), f'{where}.criterion')]
            taps = (_FeatureTap(module_by_name(student, pair['student'], f'{where}.student')),
                    _FeatureTap(module_by_name(self.net_t, pair['teacher'], f'{where}.teacher')))
            name = pair.get('name') or f"l_kd_{pair['student'].replace('.', '_')}"
            self.feature_pairs.append((name, taps, crit, float(pair.get('loss_weight', 1.0))))
        if not self.feature_pairs:
            return
        size = int((self.opt['train'].get('kd') or {}).get('probe_size', 16))
        probe = torch.zeros(1, self.opt['network_g'].get('num_in_ch', 3), size, size, device=self.device)
        with torch.no_grad():
            student(probe)
            self.net_t(probe.to(self.teacher_dtype))
        for i, (name, (tap_s, tap_t), _, _) in enumerate(self.feature_pairs):
            fs, ft = tap_s.take(), tap_t.take()
            if fs.shape[2:] != ft.shape[2:]:
                raise ValueError(f'train.kd.features[{i}]: student {tuple(fs.shape[1:])} and teacher '
                                 f'{tuple(ft.shape[1:])} features differ in size (probe {size}x{size})')
            self.adapters[str(i)] = nn.Conv2d(fs.shape[1], ft.shape[1], 1)
        self.adapters.to(self.device)

    def extra_trainable_modules(self):
        return super().extra_trainable_modules() + [self.adapters]

    def extra_state_modules(self):
        return {**super().extra_state_modules(), 'kd_adapters': self.adapters}

    def compute_losses(self, output):
        losses = super().compute_losses(output)
        with torch.no_grad():
            target = self.net_t(self.lq.to(self.teacher_dtype)).float()
        if self.kd_output:
            criterion, weight = self.kd_output
            losses['l_kd_out'] = weight * criterion(output, target)
        for i, (name, (tap_s, tap_t), criterion, weight) in enumerate(self.feature_pairs):
            teacher = tap_t.take().float()
            losses[name] = weight * criterion(self.adapters[str(i)](tap_s.take().float()), teacher)
        return losses
