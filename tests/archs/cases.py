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
    Case('RTSRN',
         small=(dict(num_feat=8, num_block=2),
                dict(num_feat=6, num_block=3, upscale=3, act_type='prelu'),
                dict(num_feat=6, num_block=1, upscale=4, num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 RTSR baseline, eduardzamfir/NTIRE23-RTSR rtsrn(scale); LRSRN paper Table 3:
             # 193.40K (x2), 202.00K (x3); a plain network: training form = deploy form
             Paper({}, 193_356, 193_356, 'x2, rtsrn(2): C64, 5 body convs'),
             Paper(dict(upscale=3), 202_011, 202_011, 'x3, rtsrn(3)'),
             Paper(dict(upscale=4), 214_128, 214_128, 'x4, rtsrn(4)'),
         )),
    Case('ANUNet',
         small=(dict(num_feat=6, num_block=1, upscale=2),
                dict(num_feat=6, num_block=2, upscale=3, act_type='prelu', nrb_ratio=1),
                dict(num_feat=5, num_block=1, upscale=4, act_type='relu', nrb_ratio=3),
                dict(num_feat=4, num_block=1, upscale=2, num_in_ch=1, num_out_ch=1)),
         paper=(  # AIS 2024 RTSR report §3.6, Table 1 (0.072 M); zhoumenghan/AIS2024_ANUNet LeRTSR(4) (deploy);
             # the training count is that of this package's NRB reading (the official training form is unpublished)
             Paper({}, 72_880, 1_073_392, 'x4 submission (LeRTSR), C28, 3 NRB'),
         ),
         fixtures=(('anunet_x4.pth', {}, 72_880),)),
    Case('CASR',
         small=(dict(num_feat=6, num_block=1, feature_size=10, feature_size_b2=5),
                dict(num_feat=6, num_block=2, feature_size=8, feature_size_b2=4, upscale=2, act_type='prelu'),
                dict(num_feat=5, num_block=0, feature_size=8, feature_size_b2=3, upscale=3, act_type='relu',
                     bias=False),
                dict(num_feat=4, num_block=1, feature_size=6, feature_size_b2=2, num_in_ch=1, num_out_ch=1)),
         paper=(  # AIS 2024 RTSR report §3.4, Table 1 (0.026 M); rlghksdbs/CASR RepNetwork_V011_BestStruct
             # (m1 C32 GELU x4, 382,033 unique training parameters) / RepNetwork_V010_BestStruct_deploy
             Paper({}, 26_203, 382_033, 'x4 submission, m1 C32, RepBlockV5 (256 + 128)'),
             Paper(dict(preset='ais24_nobias'), 26_064, 380_112, 'x4 bias-free last stage (no published weights)'),
         ),
         fixtures=tuple((f'casr_{stage}_{form}.pt', {}, 26_203) for stage in ('final', 'ft', 'scratch')
                        for form in ('train', 'deploy'))),
    Case('SPAN',
         small=(dict(num_feat=6, num_block=2),
                dict(num_feat=5, num_block=1, upscale=2),
                dict(num_feat=4, num_block=3, upscale=3, norm=False),
                dict(num_feat=4, num_block=2, upscale=1, num_in_ch=1, num_out_ch=1, norm=False)),
         paper=(  # Wan et al., CVPRW 2024; hongyuanyu/SPAN SPAN(3, 3, feature_channels=F, upscale=4) deploy-equivalent
             # counts (eval_conv + conv_cat + upsampler); training form = the branches (the official module also
             # registers the 396,240 eval_conv copies at F=48: 2,236,728; here they are buffers)
             Paper({}, 426_288, 1_840_488, 'x4, 6 SPAB, C48 (official default)'),
             Paper(dict(preset='span_ch48'), 426_288, 1_840_488, 'x4, 6 SPAB, C48'),
             Paper(dict(preset='ais24'), 24_688, 84_520, 'AIS 2024 XiaomiMM x4, 2 SPAB, C16 (Table 1: 0.026 M)'),
             Paper(dict(num_feat=28), 150_688, 634_048, 'x4, 6 SPAB, C28'),
             Paper(dict(num_feat=32), 194_608, 825_096, 'x4, 6 SPAB, C32'),
             Paper(dict(num_feat=16), 52_528, 211_624, 'x4, 6 SPAB, C16'),
         )),
    Case('SAFMNPP',
         small=(dict(num_feat=8, num_block=1),
                dict(num_feat=6, num_block=2, ffn_scale=2.0, upscale=2, act_type='relu'),
                dict(num_feat=4, num_block=1, ffn_scale=1.0, upscale=3, num_in_ch=1, num_out_ch=1)),
         paper=(  # AIS 2024 RTSR survey §3.3 (VPEG-S), Tables 1/3 (0.066 M, 0.0662 M); sunny2109/SAFMN
             # AIS2024-RTSR SAFMN_VIS24(dim=32, n_blocks=2, ffn_scale=1.5); a single form (no reparameterization)
             Paper({}, 66_176, 66_176, 'AIS 2024 x4 light, C32, 2 blocks, FFN 1.5'),
             Paper(dict(preset='ais24_light'), 66_176, 66_176, 'AIS 2024 x4 light (preset)'),
         ),
         fixtures=(('light_safmnpp.pth', {}, 66_176),)),
    Case('FMEN',
         small=(dict(num_feat=6, num_block=1, mid_feat=6, up_blocks='1+1'),
                dict(num_feat=6, num_block=2, mid_feat=5, up_blocks='2+1+2', upscale=2, attention_bn=False),
                dict(num_feat=5, num_block=1, mid_feat=6, up_blocks='1+2', upscale=3, backbone_ratio=1,
                     attention_ratio=3)),
         paper=(  # Du et al., CVPRW 2022; NJU-Jet/FMEN test_fmen.py / train_fmen.py Args (the released test model)
             Paper({}, 341_066, 1_045_866, 'x4 test model, C50 mid16, 4 blocks, up_blocks 2+1+1+1+1'),
         ),
         fixtures=(('fmen_test_weights.pt', {}, 341_066),)),
    Case('LMRLFN',
         small=(dict(num_feat=6, num_block=2, mid_feat=7, hfab_feat=6, up_blocks='2+2+1'),
                dict(num_feat=5, num_block=1, mid_feat=4, hfab_feat=5, up_blocks='1+1', upscale=2, attention_bn=False),
                dict(num_feat=6, num_block=1, mid_feat=6, hfab_feat=7, up_blocks='1+2', upscale=3, attention_ratio=1)),
         paper=(  # NTIRE 2023 ESR report §4.10, Table 1 (0.285 M); HeaseoChung/LMRLFN team33_LMRLFN.py defaults;
             # training form (BN + RRRB HFABs, Fig. 17) is this package's: no official training code
             Paper({}, 285_016, 383_936, 'x4 entry (SeaOuter), C36 m40 hfab16, 4 blocks'),
         ),
         fixtures=(('lmrlfn.pt', {}, 285_016),)),
    Case('RVSR',
         small=(dict(num_feat=6, num_block=2, se_channels=3),
                dict(num_feat=4, num_block=1, ffn_ratio=3, se_channels=2, act_type='prelu'),
                dict(num_feat=5, num_block=0, num_in_ch=1, num_out_ch=1, act_type='relu')),
         paper=(  # AIS 2024 RTSR survey §3.5, Table 1 (0.033 M); huai-chang/RVSR RVSR(sr_rate=4, N=16)
             Paper({}, 32_960, 221_168, 'AIS 2024 x4, N16, 8 RepViT blocks'),
         ),
         fixtures=(('rvsr_rep.pth', {}, 32_960), ('rvsr_train.ckpt', {}, 32_960))),
    Case('DIPNet',
         small=(dict(num_feat=6, num_block=1, mid_channels=5, esa_channels=4, block_bias=True),
                dict(num_feat=6, num_block=2, mid_channels=4, esa_channels=3, upscale=2),
                dict(num_feat=5, num_block=1, mid_channels=5, esa_channels=2, upscale=3, rep_ratio=1, act_type='relu',
                     num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.1, Table 1 (0.243 M); xiumu00/DIPNet models/DIPNet.py (deploy); the
             # training count is that of this package's RRRBConv reading (the training RRFB is unpublished)
             Paper({}, 243_252, 842_436, 'x4 entry (MegSR), C44 mid38 ESA16, 4 RRFB, bias-free trunk'),
         ),
         fixtures=(('dipnet.pth', {}, 243_252),)),
    Case('PFDN',
         small=(dict(num_feat=6, num_block=1, partial_channels=4, esa_channels=3),
                dict(num_feat=5, num_block=2, partial_channels=5, esa_channels=4, upscale=2, rep_ratio=1),
                dict(num_feat=6, num_block=1, partial_channels=2, esa_channels=2, upscale=3, act_type='gelu',
                     num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.7, Table 1 (0.272 M); icandle/PlainUSR 2023_PFDN_NTIRE team08_PFDN.py
             # (deploy); training count: every block conv an RRRB with ratio 2 (factsheet: "the existing RRRB")
             Paper({}, 272_224, 972_640, 'x4 entry (KaiBai Group), C48, partial 32, ESA16, 4 PFDB'),
         ),
         fixtures=(('pfdn.pth', {}, 272_224),)),
    Case('MFA',
         small=(dict(num_feat=9, num_block=1),
                dict(num_feat=12, num_block=2, ffn_scale=1.5, ccm_kernel=3, upscale=2, act_type='relu'),
                dict(num_feat=5, num_block=1, ffn_scale=2.0, upscale=3, num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.5, Table 1 (NJUST_E, 0.099 M); Zheng-MJ/NTIRE2023-ESR-MFA
             # models/team16_MFA.py MFA(dim=33, n_blocks=8, ffn_scale=1.8); the 2025 C60 models (models/mfa_arch.py,
             # checkpoints/MFA_X{2,3,4}.pth); a single form (no reparameterization)
             Paper({}, 98_524, 98_524, 'x4 entry (NJUST_E), C33, 8 blocks, FFN 1.8, CCM (2,5)/(5,2)'),
             Paper(dict(preset='ntire23_esr'), 98_524, 98_524, 'x4 entry (preset)'),
             Paper(dict(preset='c60', upscale=2), 284_412, 284_412, 'C60 x2 (MFA_X2.pth)'),
             Paper(dict(preset='c60', upscale=3), 292_527, 292_527, 'C60 x3 (MFA_X3.pth)'),
             Paper(dict(preset='c60', upscale=4), 303_888, 303_888, 'C60 x4 (MFA_X4.pth)'),
         ),
         fixtures=(('mfa.pth', {}, 98_524),)),
    Case('SAFMN',
         small=(dict(num_feat=8, num_block=1),
                dict(num_feat=4, num_block=2, ffn_scale=1.5, upscale=2, act_type='relu'),
                dict(num_feat=8, num_block=1, ffn_scale=1.0, upscale=3, num_in_ch=1, num_out_ch=1, deploy=True)),
         paper=(  # NTIRE 2023 ESR report §4.17, Table 1 (NJUST_R, 0.237 M); sunny2109/SAFMN NTIRE2023_ESR
             # models/team15_SAFMN.py SAFMN(dim=36, n_blocks=8, ffn_scale=2.0) (deploy); training count: this
             # package's reading of "first and last convolution with RepVGG" (3x3 and 1x1 branches, no BatchNorm)
             Paper({}, 237_000, 238_920, 'x4 entry (NJUST_R), C36, 8 blocks, FFN 2.0, GRN'),
             Paper(dict(preset='ntire23_esr'), 237_000, 238_920, 'x4 entry (preset)'),
         ),
         fixtures=(('safmn_ntire23.pth', {}, 237_000),)),
    Case('GFMN',
         small=(dict(num_feat=8, num_block=1),
                dict(num_feat=4, num_block=2, ffn_scale=1.5, upscale=2, act_type='relu'),
                dict(num_feat=8, num_block=1, ffn_scale=1.0, upscale=3, num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.6, Table 1 (NJUST_M, 0.104 M); sunny2109/SAFMN NTIRE2023_ESR
             # models/team14_GFMN.py GFMN(dim=36, n_blocks=8, ffn_scale=2); a single form (no reparameterization)
             Paper({}, 103_872, 103_872, 'x4 entry (NJUST_M), C36, 8 FMMs, GDFN 2'),
             Paper(dict(preset='ntire23_esr'), 103_872, 103_872, 'x4 entry (preset)'),
         ),
         fixtures=(('gfmn_ntire23.pth', {}, 103_872),)),
    Case('RFDN',
         small=(dict(num_feat=8, num_block=2),
                dict(num_feat=12, num_block=1, upscale=2, act_type='relu'),
                dict(num_feat=6, num_block=3, upscale=3, num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §2.2, Table 1 (0.433 M); ofsoundof/NTIRE2023_ESR models/team00_RFDN.py
             # RFDN(nf=50, num_modules=4, upscale=4); a single form (no reparameterization)
             Paper({}, 433_448, 433_448, 'x4 NTIRE 2023 ESR baseline, C50, 4 RFDBs, ESA 12'),
         ),
         fixtures=(('rfdn.pth', {}, 433_448),)),
    Case('RLFN',
         # random weights on the [0, 255] range drive ESA's sigmoid gate ~255x further than trained ones,
         # which can make float32 itself (PyTorch and onnxruntime alike) ill-conditioned to ~1e-4 of the
         # output (e.g. C8 mid 6 ESA 4); the first row is a typical one (~2e-5); test_rlfn.py checks
         # the ONNX graph against float64 on such a row and on the official weights
         small=(dict(num_feat=12, num_block=2, mid_channels=8, esa_channels=6),
                dict(num_feat=6, num_block=1, upscale=2, act_type='relu'),
                dict(num_feat=8, num_block=2, upscale=3, num_in_ch=1, num_out_ch=1, esa_channels=3)),
         paper=(  # Kong et al., CVPRW 2022; bytedance/RLFN model/rlfn.py, rlfn_s.py, rlfn_ntire.py (x4);
             # a single form (no reparameterization)
             Paper({}, 543_740, 543_740, 'RLFN (paper), C52, 6 blocks, x4'),
             Paper(dict(variant='RLFN'), 543_740, 543_740, 'RLFN (preset)'),
             Paper(dict(variant='RLFN_S'), 470_208, 470_208, 'RLFN_S (paper), C48, 6 blocks, x4'),
             Paper(dict(variant='RLFN_Prune'), 317_218, 317_218, 'RLFN_Prune (NTIRE 2022 entry), C46, mid 48'),
         ),
         fixtures=(('rlfn_ntire_x4.pth', {}, 317_218), ('rlfn_x4.pth', {}, 543_740), ('rlfn_s_x4.pth', {}, 470_208))),
    Case('LKDNS',
         small=(dict(num_feat=6, num_atten=5, num_block=1, num_in=2),
                dict(num_feat=4, num_atten=4, num_block=2, upscale=2, num_in=1),
                dict(num_feat=5, num_atten=3, num_block=1, upscale=3, num_in_ch=1, num_out_ch=1, num_in=3)),
         paper=(  # NTIRE 2023 ESR report §4.23, Table 1 (0.129 M, Set5_Baby); stella-von/LKDN lkdns_arch.py LKDN_S()
             # deploy (BSConvU, pixelshuffledirect) and training (BSConvU_rep, pixelshuffle_rep) forms
             Paper({}, 129_177, 172_449, 'x4 entry (Set5_Baby), C42, A42, 5 LKDBs, input x4'),
         ),
         fixtures=(('lkdn_s_deploy.pth', {}, 129_177), ('lkdn_s_train.pth', {}, 129_177))),
    Case('PRFDN',
         small=(dict(num_feat=8, num_block=2, esa_channels=3),
                dict(num_feat=12, num_block=1, upscale=2, act_type='relu', esa_channels=4),
                dict(num_feat=6, num_block=1, upscale=3, num_in_ch=1, num_out_ch=1, esa_channels=2)),
         paper=(  # NTIRE 2023 ESR report §4.21, Table 1 (0.616 M, SEU_CNII); yindaheng98/NTIRE2023_ESR PRFDN_28.992.pth
             # (pickled RFDNEXP); a single form (no reparameterization)
             Paper({}, 616_312, 616_312, 'x4 entry (SEU_CNII), C60, ESA 14, 4 RFDBs'),
         ),
         fixtures=(('prfdn_seu.pth', {}, 616_312),)),
    Case('LGVAN',
         small=(dict(num_feat=8, num_block=1),
                dict(num_feat=6, num_block=2, upscale=2),
                dict(num_feat=4, num_block=1, upscale=3, num_in_ch=1, num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.26, Table 1 (0.118 M, Dase-IDEALab); charonf/LGVAN-NTIRE2023-ESR
             # team18_LGVAN.py LGVAN(3, 3, 32, 9, 4); a single form (no reparameterization)
             Paper({}, 118_243, 118_243, 'x4 entry (Dase-IDEALab), C32, 9 LGABs'),
         ),
         fixtures=(('lgvan.pth', {}, 118_243),)),
    Case('RepConvFormer',
         small=(dict(num_feat=6, num_block=1, num_layer=2, kernel_size=5, small_kernel=3),
                dict(num_feat=4, num_block=2, num_layer=1, upscale=2, mlp_ratio=1),
                dict(num_feat=5, num_block=1, num_layer=1, upscale=3, kernel_size=3, small_kernel=None, num_in_ch=1,
                     num_out_ch=1)),
         paper=(  # NTIRE 2023 ESR report §4.29, Table 1 (0.307 M, AIIA-SR); Aitical/NTIRE23_ESR_AIIASR
             # team38_RepConvFormer.py (dw_size 9, small_kernel 7, depths [6, 6], embed_dim 48, mlp_ratio 2)
             Paper({}, 306_912, 335_712, 'x4 entry (AIIA-SR), C48, 2 x 6 ConvFormer layers, 9x9 (+ 7x7)'),
         ),
         fixtures=(('repconvformer.pth', {}, 306_912),)),
    Case('RepRFN',
         small=(dict(num_feat=6, num_block=1, esa_channels=3),
                dict(num_feat=5, num_block=2, upscale=2, act_type='prelu', esa_channels=2, expand=1),
                dict(num_feat=4, num_block=1, upscale=3, num_in_ch=1, num_out_ch=1, act_type='relu', esa_channels=2,
                     expand=3)),
         paper=(  # NTIRE 2023 ESR report §4.16, Table 1 (0.402 M, 25.23 G, CUC_SR); laonafahaodange/
             # NTIRE2023-ESR-RepRFN team07_RepRFN.py RepRFN(deploy=True); training form: RepRFN() with the Sobel/Laplacian
             # masks as buffers (the official module registers them as frozen parameters: 1,253,408)
             Paper({}, 401_504, 1_237_856, 'x4 entry (CUC_SR), C48, 4 RepRFBs, ESA16'),
         ),
         fixtures=(('reprfn.pth', {}, 401_504),)),
    Case('DLFAN',
         small=(dict(num_feat=6, num_block=2, esa_channels=3),
                dict(num_feat=8, num_block=5, upscale=2, mid_channels=5, esa_channels=2, esa_mode='esca'),
                dict(num_feat=4, num_block=3, upscale=3, num_in_ch=1, num_out_ch=1, act_type='relu', esa_channels=2)),
         paper=(  # NTIRE 2023 ESR report §4.18, Table 1 (0.461 M, 28.85 G, Sissie_Lab); N1koLiu/NTIRE2023_ESR
             # team17_DLFAN.py DLFAN() after switch_to_deploy / DLFAN() (LEDBB training form)
             Paper({}, 461_176, 912_796, 'x4 entry (Sissie_Lab), C52, 5 DALFBs, ESA16'),
         ),
         fixtures=(('dlfan.pth', {}, 461_176), ('dlfan_beforerep.pth', {}, 461_176))),
    Case('LGTT',
         small=(dict(num_feat=10, num_group=1, num_block=2, num_heads=1, window_long=6, window_short=2),
                dict(num_feat=20, num_group=2, num_block=3, num_heads=2, num_gtmodeler=2, window_long=8,
                     window_short=4, upscale=3),
                dict(num_feat=10, num_group=1, num_block=1, num_heads=5, num_gtmodeler=0, mlp_ratio=1, upscale=2,
                     act_type='gelu')),
         paper=(  # NTIRE 2023 ESR report §4.27, Table 1 (FRL Team 0: 0.115 M, 7.38 G); Jinchen2028/NTIRE2023_ESR
             # team03_LGTT.py LGTT() (a single form: no reparameterization)
             Paper({}, 115_248, 115_248, 'x4 entry (FRL Team 0), C30, 4 groups x 6 blocks, windows 36x8 / 8x36'),
         ),
         fixtures=(('lgtt.pth', {}, 115_248),)),
    Case('GateFormer',
         small=(dict(num_feat=6, num_block=3, block_type='33conv'),
                dict(num_feat=5, num_block=4, block_type='5577conv', inter_rate=3, upscale=2),
                dict(num_feat=4, num_block=2, block_type='77conv', inter_rate=1, upscale=3)),
         paper=(  # NTIRE 2023 ESR report Table 1 (FRL Team 1: 0.200 M, 12.76 G); LiuYLong/NTIRE2023_ESR
             # team04_GateFormer.py GateFormer() (a single form)
             Paper({}, 199_922, 199_922, 'x4 entry (FRL Team 1), C37, 28 gate layers, 11x11 context gates'),
         ),
         fixtures=(('gateformer.pth', {}, 199_922),)),
    Case('EXnet',
         small=(dict(num_feat=10, num_block=2, kernel_size=5),
                dict(num_feat=5, num_block=1, kernel_size=3, mlp_ratio=1, upscale=2, act_type='gelu'),
                dict(num_feat=10, num_block=1, kernel_size=7, upscale=3, act_type='relu')),
         paper=(  # NTIRE 2023 ESR report §4.30, Table 1 (FRL Team 2: 0.245 M, 15.37 G); Zhang9317112/NTIRE2023_ESR
             # team05_exnet.py EXnet(upscale=4, n_l=26, dim=35, kernel_size=15) (a single form)
             Paper({}, 244_558, 244_558, 'x4 entry (FRL Team 2), C35, 26 layers, 15x1 / 1x15 mixers'),
         ),
         fixtures=(('exnet.pth', {}, 244_558),)),
    Case('HCAN',
         small=(dict(num_feat=8, num_block=2, focal_level=2),
                dict(num_feat=6, num_block=1, num_group=2, focal_level=3, focal_window=1, mlp_ratio=1, upscale=2),
                dict(num_feat=4, num_block=1, focal_level=1, upscale=3, act_type='relu')),
         paper=(  # NTIRE 2023 ESR report §4.28, Table 1 (FRL Team 3: 0.179 M, 11.54 G); TIANLE233/NTIRE2023_ESR
             # team06_HCAN.py HCAN() (a single form; the 24 mean-shift conv parameters included)
             Paper({}, 178_760, 178_760, 'x4 entry (FRL Team 3), C32, 12 blocks, focal levels 3/5/7/9'),
         ),
         fixtures=(('hcan.pth', {}, 178_760),)),
]}
