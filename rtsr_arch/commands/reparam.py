"""``rtsr-reparam``: a training checkpoint -> its deploy (reparameterized) form.

    rtsr-reparam --ckpt experiments/NAME/models/net_g_latest.pth \\
        --opt options/train/LRSRN/train_LRSRN_x2_stage1_L1.yml [--out OUT.pth|OUT.safetensors] [--overwrite]
    rtsr-reparam --ckpt model.pth              # options embedded in the checkpoint, or a .yml beside it
    rtsr-reparam --ckpt model_x3_best_submission.pt --out lrsrn_x3_deploy.pth   # official, auto-detected

The network comes from ``--opt`` (the YAML the checkpoint was trained with: its ``network_g``),
else from the checkpoint itself: options embedded by this package (``network_g`` in a ``.pth``,
the metadata of a ``.safetensors``), the ``.yml`` written beside it, or an official checkpoint
recognised by an importer. ``params`` and ``params_ema`` (whichever exist; an official checkpoint
has one set) are converted, the deploy and training forms are compared on a random input
(float64 and float32), and OUT (default ``<ckpt>_deploy.pth``; ``.pth``: every set plus the deploy
``network_g``; ``.safetensors``: one set, ``params_ema`` if present else ``params``) is written
with OUT.yml beside it: a complete ``rtsr-test`` option file for OUT (``network_g.deploy: true``,
``num_gpu: auto``, ``save_img: true``; test sets: ``--test-gt``/``--test-lq``, else the
validation sets and metrics of ``--opt``, else a ``CHANGE_ME`` pair of folders its header points
to; see :func:`~rtsr_arch.commands.common.rtsr_test_options`). Never writes over
``--ckpt``/``--opt``, nor over existing files without ``--overwrite``. Exits 1 when the forms
disagree and 2 on bad input (one-line error), writing nothing in either case.
"""
import sys
from pathlib import Path

from rtsr_arch.archs.official import official_state_dict
from rtsr_arch.commands.common import (Parser, add_test_set_arguments, check_outputs, checkpoint_paths,
                                       rtsr_test_options, run_command, given_test_set, write_checkpoint_and_yml)
from rtsr_arch.loader import read_checkpoint, resolve_checkpoint
from rtsr_arch.utils.checkpoint import CheckpointError
from rtsr_arch.utils.deploy import deploy_options, deploy_state_dict
from rtsr_arch.utils.options import OptionsError, load_options, network_upscale

__all__ = ['main', 'weight_sets']

DESCRIPTION = 'A training checkpoint -> its deploy (reparameterized) form.'
PROG = 'rtsr-reparam'
PARAM_KEYS = ('params', 'params_ema')


def weight_sets(checkpoint, path):
    """``{param_key: state_dict}`` of a checkpoint of this package or of BasicSR: ``params`` and
    ``params_ema``, whichever exist (a ``.safetensors`` file holds one set: ``params``)."""
    if Path(path).suffix == '.safetensors':
        return {'params': checkpoint}
    keys = [k for k in PARAM_KEYS if isinstance(checkpoint, dict) and isinstance(checkpoint.get(k), dict)]
    if not keys:
        found = ', '.join(map(str, list(checkpoint)[:5])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a BasicSR checkpoint: expected 'params' or 'params_ema', found {found}")
    try:
        return {k: official_state_dict(checkpoint[k], ()) for k in keys}  # DataParallel's 'module.' removed
    except ValueError as exc:
        raise CheckpointError(f'{path} [{keys[0]}]: {exc}') from exc


def network_and_weights(ckpt, opt_path):
    """``(network_opt, {param_key: state_dict}, option file dict or None)``."""
    if opt_path:
        options = load_options(opt_path)
        if not isinstance(options.get('network_g'), dict):
            raise OptionsError(f'{opt_path}: no network_g section')
        checkpoint, _ = read_checkpoint(ckpt)
        return dict(options['network_g']), weight_sets(checkpoint, ckpt), options
    resolved = resolve_checkpoint(ckpt)
    print(f'network_g: {resolved.how}')
    for note in resolved.notes:
        print(f'note: {note}')
    if resolved.how.startswith('official'):  # converted by the importer: one set, in this package's layout
        return resolved.network_opt, {'params': resolved.state_dict}, None
    checkpoint, _ = read_checkpoint(ckpt)
    return resolved.network_opt, weight_sets(checkpoint, ckpt), None


def body(argv):
    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument('--ckpt', required=True,
                        help='checkpoint with params / params_ema (BasicSR or this package), or an official one')
    parser.add_argument('--opt', help='the YAML the checkpoint was trained with (default: the options the checkpoint '
                                      'embeds, the .yml beside it, or the detected official architecture)')
    parser.add_argument('--out', help='deploy checkpoint to write, .pth or .safetensors '
                                      '(default: <ckpt>_deploy.pth); OUT.yml is written beside it')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output files')
    add_test_set_arguments(parser)
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt)
    out, yml = checkpoint_paths(args.out or ckpt.with_name(f'{ckpt.stem}_deploy.pth'))
    check_outputs((out, yml), {'--ckpt': ckpt, '--opt': args.opt}, args.overwrite)
    folders = given_test_set(args)

    network_opt, sets, options = network_and_weights(ckpt, args.opt)
    converted, failed = {}, []
    for key, state_dict in sets.items():
        converted[key], check = deploy_state_dict(network_opt, state_dict, f'{ckpt} [{key}]')
        verdict = 'ok' if check.agrees() else 'DISAGREE'
        print(f'{key}: deploy vs training max |diff| float64 {check.max_abs_fp64:.3e} '
              f'(relative {check.rel_fp64:.3e}), float32 {check.max_abs_fp32:.3e}: {verdict}')
        if not check.agrees():
            failed.append(key)
    if failed:
        print(f"{PROG}: error: deploy and training forms disagree for {', '.join(failed)}; nothing written",
              file=sys.stderr)
        return 1

    key = 'params_ema' if 'params_ema' in converted else 'params'
    deploy_opt = deploy_options(network_opt)
    if out.suffix == '.safetensors':
        params, extra = converted[key], None
        if len(converted) > 1:
            others = ', '.join(k for k in converted if k != key)
            print(f'note: a safetensors file holds one weight set: writing {key} (not {others})')
        param_key = 'params'
    else:
        params, extra = converted.get('params', converted[key]), {k: v for k, v in converted.items() if k != 'params'}
        param_key = key
    options, header = rtsr_test_options(out.stem, deploy_opt, out, param_key, network_upscale(deploy_opt), folders,
                                        options)
    header = [f'The deploy form of {ckpt}, written by {PROG}.', *header]
    write_checkpoint_and_yml(out, yml, params, deploy_opt, options, extra, header)
    print(f"wrote {out} ({', '.join(converted if extra is not None else [key])}) and {yml}")
    return 0


def main(argv=None):
    """Entry point of ``rtsr-reparam`` and ``tools/reparam_ckpt.py``."""
    return run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
