"""The architecture table: one row per registered architecture. Adding an architecture = one
``*_arch.py`` plus one row here; ``test_contract.py`` runs every row through the generic checks.

A row gives small configurations for the fast generic tests (the first is the main one; the
others add variants that exercise other code paths), the paper's configurations with their
published parameter counts, and the official checkpoints that must be detected as this
architecture (tests using them skip when the fixtures folder is absent).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    """A published configuration: constructor keywords (``{}`` = the defaults, which must be the
    paper's main configuration) and its parameter counts (deploy form; training form if known)."""
    kwargs: dict
    deploy_params: int
    train_params: int = None
    source: str = ''


@dataclass(frozen=True)
class Case:
    name: str
    small: tuple  # keyword dicts of small configurations (the first is the main one)
    paper: tuple = ()
    fixtures: tuple = ()  # (official file name, importer overrides, deploy parameter count)


CASES = {case.name: case for case in [
    Case('LRSRN',
         small=(dict(num_feat=6, num_block=2, feature_size=10, variant='plain'),
                dict(num_feat=6, num_block=2, feature_size=10, variant='blockv2', upscale=3, act_type='prelu'),
                dict(num_feat=6, num_block=1, feature_size=10, variant='blockv2', upscale=4, act_type='gelu'),
                dict(num_feat=6, num_block=2, feature_size=10, variant='plain', upscale=3, act_type='lrelu'),
                dict(num_feat=6, num_block=2, feature_size=10, variant='blockv2', bias=False)),
         paper=(  # Gankhuyag, Yoon et al., CVPRW 2023, Table 1; counts of Ganzooo/LRSRN's classes
             Paper({}, 41_356, 333_196, 'x2 submission, PlainRepConv m4 C32'),
             Paper(dict(variant='blockv2'), 41_356, 421_816, 'x2, PlainRepConv_BlockV2 m4 C32'),
             Paper(dict(preset='ntire23_x3'), 45_691, 426_166, 'x3 submission, PlainRepConv_BlockV2 m4 C32'),
             Paper(dict(preset='ntire23_x3_c48'), 96_171, 631_542, 'x3, m4 C48'),
             Paper(dict(preset='casr_teacher_x4'), 398_768, 1_828_640, "CASR's teacher (rlghksdbs/CASR), x4 m10 C64"),
         ),
         fixtures=(('casr_teacher_deploy.pt', dict(act_type='gelu'), 398_768),)),
    Case('RT4KSR',
         small=(dict(num_feat=8, num_block=1),
                dict(num_feat=8, num_block=2, upscale=3, hf_gate=True),
                dict(num_feat=8, num_block=1, upscale=4, act_type='relu'),
                dict(size='XXS', upscale=2, hf_gate=True)),
         paper=(  # Zamfir, Conde, Timofte, CVPRW 2023; counts of eduardzamfir/RT4KSR's released S model
             Paper({}, 44_521, 152_233, 'x2, S (C24 B4)'),
             Paper(dict(upscale=3), 57_541, 165_253, 'x3, S (C24 B4)'),
             Paper(dict(size='S'), 44_521, 152_233, 'Table 3b S'),
         ),
         fixtures=(('rt4ksr_x2.pth', {}, 44_521), ('rt4ksr_x3.pth', {}, 57_541))),
]}
