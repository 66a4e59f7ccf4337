"""An option file checked against this machine and the files it names, before BasicSR starts.

:func:`preflight` is what ``rtsr-train`` / ``rtsr-test`` run first: BasicSR's ``--force_yml``
overrides applied as BasicSR applies them, :func:`~rtsr_arch.utils.options.check_options`
(sections, types, ranges, registered names, network keywords), then ``num_gpu`` against the CUDA
devices present, the dataset folders (present, not empty; ``PairedImageDataset`` pairs by file
name with its extension, each LR exactly HR / scale, each HR at least ``gt_size``), and
``path.pretrain_network_g`` (readable, holding ``param_key_g``, matching ``network_g``, training
vs deploy form). Each problem is one :class:`~rtsr_arch.utils.options.OptionsError` line naming
the key, the file and what was expected.
"""
import os
from pathlib import Path

import torch
from basicsr.utils.options import _postprocess_yml_value
from PIL import Image

from .checkpoint import CheckpointError, load_state_dict_checked
from .options import OptionsError, build_network, check_options

__all__ = ['preflight', 'apply_force_yml', 'check_precision', 'check_num_gpu', 'check_datasets', 'check_pretrained']

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.avif')


def apply_force_yml(opt, entries):
    """``opt`` with BasicSR's ``--force_yml key:sub=value`` overrides applied (values parsed as
    BasicSR parses them); an entry naming no existing section is a one-line error."""
    for entry in entries or ():
        keys, sep, value = entry.partition('=')
        if not sep:
            raise OptionsError(f"--force_yml {entry}: expected key:subkey=value")
        *parents, leaf = [k.strip() for k in keys.split(':')]
        node = opt
        for i, key in enumerate(parents):
            if not isinstance(node, dict) or key not in node:
                raise OptionsError(f"--force_yml {entry}: the option file has no {':'.join(parents[:i + 1])}")
            node = node[key]
        if not isinstance(node, dict):
            raise OptionsError(f"--force_yml {entry}: {':'.join(parents)} is not a section")
        node[leaf] = _postprocess_yml_value(value.strip())
    return opt


def check_num_gpu(opt, source):
    """``num_gpu`` (``auto``: every CUDA device, 0 without CUDA) against the devices present."""
    wanted, present = opt['num_gpu'], torch.cuda.device_count()
    if wanted != 'auto' and wanted > present:
        have = f'{present} CUDA device(s)' if present else 'no CUDA device (torch.cuda.is_available() is False)'
        raise OptionsError(f'{source}: num_gpu: {wanted} but this machine has {have}; set num_gpu: auto '
                           f'(every GPU, or the CPU when there is none) or at most {present}')


def _images(folder):
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.'))


def _folder(dataset, key, where):
    folder = Path(os.path.expanduser(str(dataset[key])))
    if not folder.is_dir():
        raise OptionsError(f'{where}.{key}: no such folder {folder}')
    return folder


def _image_size(path, where):
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, ValueError) as exc:
        raise OptionsError(f'{where}: {path}: cannot be read as an image ({exc})') from None


def _check_paired_folders(dataset, where, scale, phase):
    """BasicSR's ``PairedImageDataset`` from folders: every HR has its LR (``filename_tmpl`` +
    the HR's extension), LR = HR / scale, HR >= ``gt_size`` when training."""
    gt_dir, lq_dir = _folder(dataset, 'dataroot_gt', where), _folder(dataset, 'dataroot_lq', where)
    gts, lqs = _images(gt_dir), {p.name for p in _images(lq_dir)}
    if not gts:
        raise OptionsError(f'{where}.dataroot_gt: no images in {gt_dir}')
    tmpl = dataset.get('filename_tmpl', '{}')
    gt_size = dataset.get('gt_size') if phase == 'train' else None
    for gt in gts:
        lq_name = tmpl.format(gt.stem) + gt.suffix
        if lq_name not in lqs:
            other = sorted(n for n in lqs if Path(n).stem == tmpl.format(gt.stem))
            hint = (f' (found {other[0]}: PairedImageDataset pairs by file name with the HR\'s extension; '
                    'pair encoded LR with MultiLRPairedDataset, or store it as ' + lq_name + ')') if other else ''
            raise OptionsError(f'{where}.dataroot_lq: no {lq_name} in {lq_dir} for the HR {gt}{hint}')
        h, w = _image_size(gt, f'{where}.dataroot_gt')
        lh, lw = _image_size(lq_dir / lq_name, f'{where}.dataroot_lq')
        if (h, w) != (lh * scale, lw * scale):
            raise OptionsError(f'{where}: {lq_dir / lq_name} is {lh}x{lw} but the HR {gt} is {h}x{w}; '
                               f'expected HR = {scale} x LR')
        if gt_size and (h < gt_size or w < gt_size):
            raise OptionsError(f'{where}.gt_size: {gt_size} is larger than the HR {gt} ({h}x{w})')


def check_datasets(opt, source, phase):
    """Folders of every dataset: present and not empty; BasicSR's paired folders checked in full
    (names, sizes, crops). This package's datasets check the rest themselves, naming the file."""
    for name, dataset in opt['datasets'].items():
        where = f'{source}: datasets.{name}'
        backend = (dataset.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            if isinstance(dataset.get(key), str):
                path = Path(os.path.expanduser(dataset[key]))
                if not path.exists():
                    raise OptionsError(f'{where}.{key}: no such {"folder" if backend == "disk" else "LMDB"} {path}')
                if backend == 'disk' and path.is_dir() and not _images(path):
                    raise OptionsError(f'{where}.{key}: no images in {path}')
        if dataset.get('meta_info_file') and not Path(dataset['meta_info_file']).is_file():
            raise OptionsError(f"{where}.meta_info_file: no such file {dataset['meta_info_file']}")
        if (dataset['type'] == 'PairedImageDataset' and backend == 'disk' and not dataset.get('meta_info_file')
                and isinstance(dataset.get('dataroot_gt'), str) and isinstance(dataset.get('dataroot_lq'), str)):
            _check_paired_folders(dataset, where, opt['scale'], phase if name == 'train' else 'val')


def _other_form(network_opt):
    """``network_opt`` in the other form (deploy <-> training), or None without a deploy switch."""
    try:
        return build_network({**network_opt, 'deploy': not network_opt.get('deploy', False)})
    except (OptionsError, TypeError, ValueError):
        return None


def check_pretrained(opt, source):
    """``path.pretrain_network_g`` as BasicSR will load it: a readable torch checkpoint holding
    ``param_key_g`` (BasicSR would silently take ``params`` instead) whose weights match
    ``network_g`` (with ``strict_load_g``), in the same form (training or deploy); other
    ``pretrain_network_*`` and ``resume_state`` files must exist."""
    from ..loader import read_checkpoint  # the loader imports this package's options
    paths = opt['path']
    for key, value in paths.items():
        if value and (key.startswith('pretrain_network_') or key == 'resume_state') and not Path(value).is_file():
            raise OptionsError(f'{source}: path.{key}: no such file {value}')
    ckpt = paths.get('pretrain_network_g')
    if not ckpt:
        return
    where = f'{source}: path.pretrain_network_g: {ckpt}'
    if Path(ckpt).suffix == '.safetensors':
        raise OptionsError(f'{where}: BasicSR loads torch .pth files only; give the .pth (rtsr-reparam and '
                           'rtsr-convert write one), or load the .safetensors with rtsr_arch.load_model')
    try:
        checkpoint, _ = read_checkpoint(ckpt)
    except CheckpointError as exc:
        raise OptionsError(f'{source}: path.pretrain_network_g: {exc}') from None
    param_key = paths.get('param_key_g') or 'params'
    entries = [k for k, v in checkpoint.items() if isinstance(v, dict) and any(map(torch.is_tensor, v.values()))] \
        if isinstance(checkpoint, dict) else []
    if param_key not in entries:
        found = ', '.join(map(str, entries)) or 'none: not a BasicSR checkpoint (convert it with rtsr-convert)'
        raise OptionsError(f"{where}: no '{param_key}' entry (path.param_key_g); entries holding weights: {found}")
    if paths.get('strict_load_g', True) is False:
        return
    state_dict = {k.removeprefix('module.'): v for k, v in checkpoint[param_key].items()}
    net = build_network(opt['network_g'], f'{source}: network_g')
    try:
        load_state_dict_checked(net, state_dict, f'{where} [{param_key}]')
    except CheckpointError as exc:
        other = _other_form(opt['network_g'])
        if other is not None and set(other.state_dict()) == set(state_dict):
            deploy = bool(opt['network_g'].get('deploy', False))
            held = 'training' if deploy else 'deploy (reparameterized)'
            fix = ('set network_g.deploy: false, or fuse it with rtsr-reparam' if deploy
                   else 'set network_g.deploy: true')
            raise OptionsError(f'{where}: holds the {held} form but network_g.deploy is {str(deploy).lower()}; '
                               f'{fix}') from None
        raise OptionsError(str(exc)) from None


def check_precision(opt, source):
    """``train.mixed_precision``: none, or one of RTSRModel's autocast precisions."""
    from ..models.rtsr_model import AUTOCAST_DTYPES
    value = (opt.get('train') or {}).get('mixed_precision')
    if value is not None and value not in AUTOCAST_DTYPES:
        raise OptionsError(f"{source}: train.mixed_precision: {value!r}: expected {' or '.join(AUTOCAST_DTYPES)} "
                           '(or none for float32)')


def preflight(opt, source, phase, force_yml=None):
    """Every check above on the option dict ``opt`` read from ``source``; returns ``opt`` with the
    ``--force_yml`` overrides applied."""
    opt = apply_force_yml(opt, force_yml)
    check_options(opt, source, phase)
    check_precision(opt, source)
    check_num_gpu(opt, source)
    check_datasets(opt, source, phase)
    check_pretrained(opt, source)
    return opt
