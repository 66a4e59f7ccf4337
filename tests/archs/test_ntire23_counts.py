"""NTIRE 2023 Efficient SR counts of the deploy networks, as ``rtsr-runtime`` reports them, against
the official results table (Li et al., "NTIRE 2023 Challenge on Efficient Super-Resolution: Methods
and Results", CVPRW 2023, Table 1; counter conventions of ofsoundof/NTIRE2023_ESR
``utils/model_summary.py`` at 3x256x256: parameters, FLOPs [G], activations [M], #conv).

One row per entry: append ``(model, kwargs, params, FLOPs G, activations M, #conv, note)``. Params
must be equal; FLOPs and activations equal to the table's two decimals; #conv equal.
"""
import json

import pytest

from rtsr_arch.commands import runtime

pytestmark = pytest.mark.usefixtures('torch_single_thread')

ROWS = [
    # model, kwargs (--set), params, FLOPs [G], activations [M], #conv, note
    ('LMRLFN', {}, 285_016, 18.63, 80.48, 44,
     'SeaOuter; the module-level LeakyReLU(0.1) of team33_LMRLFN.py is not counted (functional here too)'),
    ('DIPNet', {}, 243_252, 14.90, 72.97, 39,
     'MegSR (1st by runtime); bias-free trunk, one LeakyReLU module per block counted per call'),
    ('PFDN', {}, 272_224, 16.76, 65.10, 35,
     'KaiBai Group; one LeakyReLU module per block counted per call (48 + 32 + 48 channels)'),
    ('SAFMN', {}, 237_000, 15.40, 86.11, 58,
     'NJUST_R (all four equal); GELU, GRN and the bilinear image skip count 0, SAFM convs at 1/4, 1/8, 1/16'),
    ('GFMN', {}, 103_872, 6.56, 199.35, 66,
     'NJUST_M; the report\'s Table 1 reads 199.35 M activations (a transcription of the results image reads 199.23)'),
    ('MFA', {}, 98_524, 6.02, 242.96, 66,
     'NJUST_E (all four equal); depthwise convs k*k*C*(C/groups) MACs, GELU, LayerNorm, pooling and nearest resizes 0'),
    ('RepRFN', {}, 401_504, 25.23, 81.88, 39,
     'CUC_SR (all four equal); one LeakyReLU(0.05) module per RepBlock and per conv3, each counted'),
    ('DLFAN', {}, 461_176, 28.85, 107.07, 48,
     'Sissie_Lab (all four equal); one LeakyReLU(0.02) module per block counted per call'),
    ('LKDNS', {}, 129_177, 8.29, 202.70, 86,
     'Set5_Baby (all four equal); GELU and LayerNorm count 0; depthwise convs k*k*C MACs'),
    ('PRFDN', {}, 616_312, 38.63, 133.57, 64,
     'SEU_CNII (all four equal); RFDN C60, ESA 14; LeakyReLU and the two ESA ReLU calls counted per call'),
    ('LGVAN', {}, 118_243, 9.06, 332.39, 122,
     'Dase-IDEALab (all four equal); the LeakyReLU(0.2) at the output resolution counted, GELU/LayerNorm 0'),
    ('RepConvFormer', {}, 306_912, 19.53, 355.47, 89,
     'AIIA-SR (all four equal); deploy form (9x9 depthwise kernels merged); GELU/LayerNorm 0'),
    ('RFDN', {}, 433_448, 27.10, 112.03, 64,
     'RFDN baseline (all four equal); one LeakyReLU module per RFDB and the ESA ReLU module counted per call'),
    ('RLFN', {'variant': 'RLFN_Prune'}, 317_218, 19.70, 80.05, 39,
     'ByteESR NTIRE 2022 entry, the bytedance/RLFN README row (all four equal); light ESA, no ReLU'),
    ('RLFN', {}, 543_740, 33.99, 126.49, 57,
     'RLFN (paper, C52, 6 blocks): the official code and weights by the official counter (no table row)'),
    ('RLFN', {'variant': 'RLFN_S'}, 470_208, 29.18, 118.10, 57,
     'RLFN_S (paper, C48, 6 blocks): the official code and weights by the official counter (no table row)'),
    ('LGTT', {}, 115_248, 7.38, 170.26, 58,
     'FRL Team 0 (all four equal); attention matmuls, functional mean shift and pixel mixer count 0, BatchNorm 2x'),
    ('GateFormer', {}, 199_922, 12.76, 243.20, 100,
     'FRL Team 1 (all four equal); no activation; LayerNorm and the gating products count 0'),
    ('EXnet', {}, 244_558, 15.37, 422.90, 158,
     'FRL Team 2 (all four equal); each shift 1x1 conv one conv (its fixed shift is free), SiLU/LayerNorm 0'),
    ('HCAN', {}, 178_760, 11.54, 285.41, 112,
     'FRL Team 3 (all four equal); the two stored mean-shift 1x1 convs count (24 params, 2 convs), GELU 0'),
]


@pytest.mark.parametrize('model, kwargs, params, flops_g, acts_m, num_conv, note', ROWS,
                         ids=[row[0] + ''.join(f'-{k}={v}' for k, v in row[1].items()) for row in ROWS])
def test_counts_equal_the_official_table(model, kwargs, params, flops_g, acts_m, num_conv, note, tmp_path):
    """``rtsr-runtime --arch MODEL [--set k=v] --device cpu`` (tiny CPU timing input: the counts run
    on the meta device at 256x256 whatever the timing input)."""
    argv = ['--arch', model, *[a for k, v in kwargs.items() for a in ('--set', f'{k}={v}')], '--device', 'cpu',
            '--cpu-crop', '16', '--cpu-warmup', '0', '--cpu-repeat', '1', '--out', str(tmp_path)]
    assert runtime.main(argv) == 0
    row, = json.loads((tmp_path / 'runtime_4k.json').read_text())['results']
    got = (row['params_deploy'], round(row['flops_256_G'], 2), round(row['acts_256_M'], 2), row['num_conv'])
    print(f'{model} {kwargs}: {got[0]:,} params, {got[1]} G, {got[2]} M, {got[3]} convs ({note})')
    assert got == (params, flops_g, acts_m, num_conv)
