#!/usr/bin/env python
"""Reparameterize a BasicSR training checkpoint into its deploy form.

    python tools/reparam_ckpt.py --ckpt experiments/NAME/models/net_g_latest.pth \
        --opt options/train/LRSRN/train_LRSRN_x2_stage1_L1.yml [--out OUT.pth]

Converts ``params`` and ``params_ema`` (whichever exist) of the network described by the YAML's
``network_g``, checks on a random input that the deploy and training forms agree, and writes
OUT.pth (default: ``<ckpt>_deploy.pth``) plus OUT.yml beside it: the same options with
``network_g.deploy: true`` and ``path.pretrain_network_g`` set to OUT.pth. Exits 1 when the forms
disagree and 2 on bad input (one-line error), writing nothing in either case.
"""
import argparse
import sys
from pathlib import Path

import rtsr_arch  # noqa: F401  (registers the architectures)
from rtsr_arch.utils.checkpoint import CheckpointError, atomic_save, load_checkpoint
from rtsr_arch.utils.deploy import deploy_state_dict
from rtsr_arch.utils.options import OptionsError, dump_options, load_options

PARAM_KEYS = ('params', 'params_ema')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--ckpt', required=True, help='BasicSR checkpoint with params / params_ema')
    parser.add_argument('--opt', required=True, help='the YAML the checkpoint was trained with')
    parser.add_argument('--out', help='deploy checkpoint to write (default: <ckpt>_deploy.pth)')
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else ckpt.with_name(f'{ckpt.stem}_deploy.pth')

    try:
        opt = load_options(args.opt)
        if not isinstance(opt.get('network_g'), dict):
            raise OptionsError(f'{args.opt}: no network_g section')
        checkpoint = load_checkpoint(ckpt)
        keys = [k for k in PARAM_KEYS if isinstance(checkpoint, dict) and k in checkpoint]
        if not keys:
            found = ', '.join(map(str, list(checkpoint)[:5])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise CheckpointError(f"{ckpt}: not a BasicSR checkpoint: expected 'params' or 'params_ema', found {found}")
        converted, failed = {}, []
        for key in keys:
            converted[key], check = deploy_state_dict(opt['network_g'], checkpoint[key], f'{ckpt} [{key}]')
            verdict = 'ok' if check.agrees() else 'DISAGREE'
            print(f'{key}: deploy vs training max |diff| float64 {check.max_abs_fp64:.3e} '
                  f'(relative {check.rel_fp64:.3e}), float32 {check.max_abs_fp32:.3e}: {verdict}')
            if not check.agrees():
                failed.append(key)
    except (CheckpointError, OptionsError) as exc:
        print(f'reparam_ckpt: error: {exc}', file=sys.stderr)
        return 2
    if failed:
        print(f"reparam_ckpt: error: deploy and training forms disagree for {', '.join(failed)}; nothing written",
              file=sys.stderr)
        return 1

    atomic_save(converted, out)
    opt['network_g'] = {**opt['network_g'], 'deploy': True}
    opt['path'] = {**{k: v for k, v in (opt.get('path') or {}).items() if k != 'resume_state'},
                   'pretrain_network_g': str(out.resolve()), 'param_key_g': keys[-1], 'strict_load_g': True}
    dump_options(opt, out.with_suffix('.yml'))
    print(f'wrote {out} ({", ".join(keys)}) and {out.with_suffix(".yml")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
