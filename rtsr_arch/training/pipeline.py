"""``rtsr-train``'s pipeline: BasicSR 1.4.2's ``train_pipeline`` with

- an exactly resumable data order (:mod:`.data_order`): the training state records the epoch,
  the batches of it already used and the main process's random generators, and a resumed run
  continues with the next batch, so a run killed at any moment and resumed with
  ``--auto_resume`` ends with the same weights as an uninterrupted one (on the same device and
  settings, ``prefetch_mode`` None or ``cuda``);
- the process-group backend of :mod:`rtsr_arch.utils.distributed` (``gloo`` on CPU);
- training curves (:class:`~rtsr_arch.utils.curves.TrainingCurves`): ``curves_<name>.png`` beside
  the log, redrawn at each validation and checkpoint (an iteration that does both validates
  first, so the state saved there holds its metrics);
- as many epochs as ``total_iter`` needs (BasicSR counts the batches of an epoch without
  ``drop_last`` and may stop early).
"""
import argparse
import datetime
import functools
import logging
import math
import time
from os import path as osp

import basicsr.utils.options
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.train import init_tb_loggers
from basicsr.utils import AvgTimer, MessageLogger, get_env_info, get_root_logger, get_time_str, make_exp_dirs, \
    mkdir_and_rename
from basicsr.utils.options import copy_opt_file, dict2str, parse_options

from ..utils.curves import TrainingCurves
from ..utils.distributed import choose_backend, init_dist
from ..utils.options import load_options
from ..utils.resume import load_resume_state
from .data_order import ResumableSampler, SeededSamples, preserved_rng, rng_state, set_rng_state

__all__ = ['train_pipeline', 'curves_path']


def curves_path(opt):
    """Where the training curves of a run are drawn: ``curves_<name>.png`` beside its log."""
    return osp.join(opt['path']['log'], f"curves_{opt['name']}.png")


def _select_backend(argv):
    """Make BasicSR's option parser start the process group with :func:`choose_backend`'s backend."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    path = parser.parse_known_args(argv)[0].opt
    chosen = choose_backend(load_options(path)) if path else None

    def start(launcher, backend=None, port=None):  # dist_params' backend is already in ``chosen``
        init_dist(launcher, chosen, port)
    basicsr.utils.options.init_dist = start


def _dataloaders(opt, logger):
    """BasicSR's train and validation loaders, the train one over a :class:`ResumableSampler`."""
    train_loader = sampler = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            train_set = build_dataset(dataset_opt)
            sampler = ResumableSampler(train_set, opt['world_size'], opt['rank'],
                                       dataset_opt.get('dataset_enlarge_ratio', 1), seed=opt['manual_seed'])
            train_loader = build_dataloader(SeededSamples(train_set), dataset_opt, num_gpu=opt['num_gpu'],
                                            dist=opt['dist'], sampler=sampler, seed=opt['manual_seed'])
            per_epoch = sampler.num_samples // train_loader.batch_size
            if per_epoch == 0:
                raise ValueError(f"datasets.train: {sampler.num_samples} samples per process make no batch of "
                                 f"{train_loader.batch_size}; lower batch_size_per_gpu or raise dataset_enlarge_ratio")
            total_iters = int(opt['train']['total_iter'])
            logger.info(f'Training statistics:\n\tNumber of train images: {len(train_set)}'
                        f"\n\tDataset enlarge ratio: {dataset_opt.get('dataset_enlarge_ratio', 1)}"
                        f"\n\tBatch size per gpu: {dataset_opt['batch_size_per_gpu']}"
                        f"\n\tWorld size (gpu number): {opt['world_size']}"
                        f'\n\tRequire iter number per epoch: {per_epoch}'
                        f'\n\tTotal epochs: {math.ceil(total_iters / per_epoch)}; iters: {total_iters}.')
        elif phase.split('_')[0] == 'val':
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                sampler=None, seed=opt['manual_seed']))
            logger.info(f"Number of val images/folders in {dataset_opt['name']}: {len(val_set)}")
        else:
            raise ValueError(f'datasets.{phase}: not a phase; expected train, val or val_<n>')
    return train_loader, sampler, val_loaders


def _prefetcher(opt, train_loader, logger):
    mode = opt['datasets']['train'].get('prefetch_mode')
    if mode is None or mode == 'cpu':
        return CPUPrefetcher(train_loader)
    if mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('datasets.train.pin_memory: must be true with prefetch_mode cuda')
        logger.info('Use cuda prefetch dataloader')
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"datasets.train.prefetch_mode: {mode!r} is not one of: None, 'cpu', 'cuda'")


def train_pipeline(root_path, argv):
    """Train as ``basicsr.train.train_pipeline`` does (see the module docstring); ``argv`` are
    BasicSR's command-line flags (``-opt``, ``--launcher``, ``--auto_resume``, ...)."""
    _select_backend(argv)
    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
    copy_opt_file(args.opt, opt['path']['experiments_root'])
    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = init_tb_loggers(opt)

    train_loader, sampler, val_loaders = _dataloaders(opt, logger)
    total_iters = int(opt['train']['total_iter'])
    model = build_model(opt)
    curves = TrainingCurves()
    position = {'epoch': 0, 'batches': 0}  # batches of the epoch already trained on
    current_iter, rng = 0, None
    if resume_state:
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
        current_iter = resume_state['iter']
        loop = resume_state.get('loop')
        if loop:
            position = {'epoch': loop['epoch'], 'batches': loop['batches']}
            rng = loop['rng']
            curves.load_state_dict(loop['curves'])
        else:
            position['epoch'] = resume_state['epoch']
            logger.warning('The resume state records no data position (saved by another trainer): '
                           'the epoch restarts from its first batch.')
    model.loop_state = lambda: {**position, 'rng': rng_state(), 'curves': curves.state_dict()}
    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    with preserved_rng():
        prefetcher = _prefetcher(opt, train_loader, logger)
    if rng is not None:
        set_rng_state(rng)
    png = curves_path(opt)
    draw = functools.partial(curves.save, png, title=opt['name']) if opt['rank'] == 0 else lambda: None

    logger.info(f"Start training from epoch: {position['epoch']}, iter: {current_iter}")
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    while current_iter < total_iters:
        sampler.set_epoch(position['epoch'], skip=position['batches'] * train_loader.batch_size)
        with preserved_rng():  # creating the loader's iterator draws a seed
            prefetcher.reset()
        train_data = prefetcher.next()
        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            position['batches'] += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': position['epoch'], 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                curves.add_train(current_iter, {'lr': log_vars['lrs'][0], **model.get_current_log()})
                msg_logger(log_vars)  # (pops 'lrs')
            if opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0:
                _validate(model, val_loaders, current_iter, tb_logger, opt, curves)  # before saving: in the curves
                draw()
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(position['epoch'], current_iter)
                draw()
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next() if current_iter < total_iters else None
        if current_iter < total_iters:
            position['epoch'] += 1
            position['batches'] = 0

    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if opt.get('val') is not None:
        _validate(model, val_loaders, current_iter, tb_logger, opt, curves)
    draw()
    logger.info(f'Training curves: {png}')
    if tb_logger:
        tb_logger.close()


def _validate(model, val_loaders, current_iter, tb_logger, opt, curves):
    """Validate on every set without moving the random generators; record the metrics (rank 0)."""
    with preserved_rng():
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
            if opt['rank'] == 0 and getattr(model, 'metric_results', None):
                curves.add_val(current_iter, val_loader.dataset.opt['name'], model.metric_results)
