"""spandrel interop (chaiNNer-org/spandrel 0.4.2, the front-ends' loader): this package's checkpoints
(``save_model``, ``rtsr-convert``, ``rtsr-reparam``) in spandrel, natively for SPAN and through
:mod:`rtsr_arch.spandrel_support` for every other architecture, with outputs equal to
``rtsr_arch.load_model``'s on real photographs. Registrations go into copies of spandrel's main
registry, which other test modules use unregistered (restored where the default is tested)."""
import ast
import copy
import importlib
import sys
from pathlib import Path

import pytest
import torch

import rtsr_arch  # first: basicsr's import aliases
from archs.cases import CASES
from basicsr.utils.registry import ARCH_REGISTRY
from helpers import photos, randomize
from rtsr_arch.archs.official import IMPORTERS, find_importers
from rtsr_arch.commands import convert, reparam
from rtsr_arch.loader import save_checkpoint
from rtsr_arch.utils.options import build_network

spandrel = pytest.importorskip('spandrel', reason='spandrel not installed (pip install spandrel)')
support = pytest.importorskip('rtsr_arch.spandrel_support')

pytestmark = pytest.mark.usefixtures('torch_single_thread')

X = photos(24, 30)  # 24 x 30: a multiple of every declared input multiple (1, 2, 3), above every minimum (<= 19)


@pytest.fixture
def registry():
    """A copy of spandrel's main registry with this package's architectures registered."""
    registry = spandrel.MAIN_REGISTRY.copy()
    support.register(registry)
    return registry


def load(path, registry=spandrel.MAIN_REGISTRY):
    return spandrel.ModelLoader(registry=registry).load_from_file(path)


def outputs(model, x=X):
    with torch.no_grad():
        return model.eval()(x)


def official_like(name, kwargs, seed):
    """A random ``name`` network whose keywords the weights do not store have the official values
    (those an importer assumes), so the weights alone determine it; training form."""
    model = build_network({'type': name, **kwargs})
    (importer, state_dict), = find_importers(model.state_dict())
    result = importer.convert(state_dict, {})
    kwargs = {**kwargs, **{k: result.network_opt[k] for k in result.assumed if k != 'deploy'}}
    return randomize(build_network({'type': name, **kwargs}), seed=seed, std=0.5, fan_in=True).eval()


def forms(model):
    return {'train': model, 'deploy': rtsr_arch.reparameterize(copy.deepcopy(model))}


# ----------------------------------------------------------------------------- which architectures

@pytest.mark.parametrize('text, allowed', [
    ('MIT', True), ('Apache-2.0', True), ('BSD-3-Clause', True), ('none stated', True),
    ('Apache-2.0 (NTIRE2023_ESR/ folder: MIT)', True),
    ('CC-BY-NC-4.0', False), ('GPL-3.0', False), ('Apache-2.0 (weights/ folder: CC-BY-NC-SA-4.0)', False),
    ('MIT, non-commercial use only', False), ('', False), ('none', False)])
def test_licence_rule(text, allowed):
    assert support.licence_allows(text) is allowed


def test_register_is_idempotent_and_keeps_spandrel_entries():
    registry = spandrel.MAIN_REGISTRY.copy()
    native = {a.architecture.id: a for a in registry}
    added = support.register(registry)
    names = [a.architecture.name for a in added]
    assert {'LRSRN', 'RT4KSR', 'SPAN', 'RTSRN'} <= set(names) and len(names) == len(set(names))
    assert all(a.architecture.id == support.ID_PREFIX + a.architecture.name for a in added)
    assert support.register(registry) == [] and len(registry) == len(native) + len(added)
    assert all(registry[i] is a for i, a in native.items())  # spandrel's own entries untouched
    assert len(spandrel.MAIN_REGISTRY) == len(native)  # a copy was given: the main one is unchanged
    # every architecture with an importer and an allowed licence, and only those
    expected = sorted(n for n in IMPORTERS if support.licence_allows(ARCH_REGISTRY.get(n).license))
    assert sorted(names) == expected


# ----------------------------------------------------------------------------- LRSRN and RT4KSR

@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('name, kwargs, multiple', [('LRSRN', dict(num_feat=8, num_block=2, feature_size=12), 1),
                                                    ('RT4KSR', dict(num_feat=8, num_block=1), 2)])
def test_lrsrn_and_rt4ksr_checkpoints_load_with_identical_outputs(tmp_path, registry, name, kwargs, multiple, suffix):
    """save_model's files, training and deploy form: detected after registration, loaded as
    load_model loads them (bit-identical output), with the declared scale, size requirements,
    fp16 support and tiling; spandrel's call API (padding, clamping) on an odd size."""
    for form, model in forms(official_like(name, kwargs, seed=1)).items():
        path = tmp_path / f'{name}_{form}{suffix}'
        rtsr_arch.save_model(model, path)
        with pytest.raises(spandrel.UnsupportedModelError):
            load(path)  # not without the registration
        desc = load(path, registry)
        ours = rtsr_arch.load_model(path)
        assert desc.architecture.id == f'rtsr_arch.{name}' and desc.purpose == 'SR' and desc.scale == 2
        assert (desc.input_channels, desc.output_channels, desc.supports_half) == (3, 3, True)
        assert (desc.size_requirements.multiple_of, desc.tiling) == (multiple, spandrel.ModelTiling.SUPPORTED)
        assert torch.equal(outputs(desc.model), outputs(ours))
        odd = X[:1, :, :23, :29]
        padded = torch.nn.functional.pad(odd, (0, 29 % multiple, 0, 23 % multiple), mode='reflect')
        assert torch.equal(desc(odd), outputs(ours, padded)[..., :46, :58].clamp(0, 1))


def test_rtsr_reparam_output_loads(tmp_path, registry):
    """rtsr-reparam's deploy file of an LRSRN training checkpoint (params + params_ema)."""
    model = official_like('LRSRN', dict(num_feat=8, num_block=2, feature_size=12), seed=2)
    ema = randomize(copy.deepcopy(model), seed=3, std=0.5, fan_in=True)
    ckpt = tmp_path / 'lrsrn.pth'
    save_checkpoint(ckpt, model.state_dict(), model.network_opt, {'params_ema': ema.state_dict()})
    assert reparam.main(['--ckpt', str(ckpt), '--out', str(tmp_path / 'deploy.pth')]) == 0
    for path in (ckpt, tmp_path / 'deploy.pth'):
        desc = load(path, registry)
        ours = rtsr_arch.load_model(path)  # both read params_ema first
        assert torch.equal(outputs(desc.model), outputs(ours))
        reference = outputs(ema)  # the EMA weights, fused
        assert (outputs(ours) - reference).abs().max() <= 1e-5 * reference.abs().max()
        assert (outputs(model) - reference).abs().max() > 1e-2


# ----------------------------------------------------------------------------- every architecture

# small configurations that keep the official values of the keywords the weights do not store
SMALL_OFFICIAL = {'LGTT': dict(num_feat=30, num_group=1, num_block=1)}  # num_heads 3: num_feat a multiple of 30


@pytest.mark.parametrize('name', sorted(CASES))
def test_every_architecture_loads_in_spandrel(tmp_path, registry, name):
    """Training and deploy checkpoints of every registered architecture (small configurations
    of the contract table) load after registration with load_model's output."""
    model = official_like(name, SMALL_OFFICIAL.get(name, CASES[name].small[0]), seed=4)
    for form, net in forms(model).items():
        path = tmp_path / f'{form}.pth'
        rtsr_arch.save_model(net, path)
        desc = load(path, registry)
        assert desc.architecture.id == f'rtsr_arch.{name}' and desc.scale == model.upscale
        assert desc.supports_half is model.fp16_safe and desc.size_requirements.minimum >= model.min_input_size
        tiling = spandrel.ModelTiling.SUPPORTED if model.tile_exact else spandrel.ModelTiling.DISCOURAGED
        assert desc.tiling == tiling
        x = X[:, :model.network_opt['num_in_ch']]
        assert torch.equal(outputs(desc.model, x), outputs(rtsr_arch.load_model(path), x))


# ----------------------------------------------------------------------------- spandrel's own architectures

def test_span_files_go_to_spandrels_own_span(tmp_path, registry):
    """An official-layout SPAN (spandrel's class, 6 blocks) through rtsr-convert: spandrel's own
    SPAN loads the output, registered or not, with the original's output; rtsr-reparam's deploy
    file and a 2-block SPAN (which spandrel's SPAN claims but cannot load) load through ours."""
    from spandrel.architectures.SPAN import SPAN as SpandrelSPAN

    theirs = randomize(SpandrelSPAN(num_in_ch=3, num_out_ch=3, feature_channels=4, upscale=2), seed=5, std=0.5,
                       fan_in=True).eval()
    torch.save(theirs.state_dict(), tmp_path / 'official.pth')
    out = tmp_path / 'span.pth'
    assert convert.main(['--input', str(tmp_path / 'official.pth'), '--out', str(out)]) == 0
    assert reparam.main(['--ckpt', str(out), '--out', str(tmp_path / 'deploy.pth')]) == 0
    reference = outputs(theirs)
    for reg in (spandrel.MAIN_REGISTRY, registry):
        desc = load(out, reg)
        assert desc.architecture.id == 'SPAN'
        assert (outputs(desc.model) - reference).abs().max() <= 1e-5 * reference.abs().max()
    with pytest.raises(spandrel.UnsupportedModelError):
        load(tmp_path / 'deploy.pth')
    desc = load(tmp_path / 'deploy.pth', registry)
    assert desc.architecture.id == 'rtsr_arch.SPAN'
    assert torch.equal(outputs(desc.model), outputs(rtsr_arch.load_model(tmp_path / 'deploy.pth')))

    rtsr_arch.save_model(official_like('SPAN', dict(num_feat=4, num_block=2), seed=6), tmp_path / 'two.pth')
    with pytest.raises(RuntimeError, match='Missing key'):
        load(tmp_path / 'two.pth')  # spandrel's SPAN detects it, then fails: ours is placed before it
    assert load(tmp_path / 'two.pth', registry).architecture.id == 'rtsr_arch.SPAN'


def test_rtsrn_is_not_taken_for_compact_and_compact_stays_compact(tmp_path, registry):
    """spandrel's RealESRGAN Compact claims a PReLU RTSRN's keys (body.0, body.1) and cannot load it;
    after registration RTSRN loads as ours, while a real Compact and a real SAFMN still go to
    spandrel's own loaders."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.SAFMN import SAFMN

    path = tmp_path / 'rtsrn.pth'
    rtsr_arch.save_model(official_like('RTSRN', dict(num_feat=8, num_block=2, act_type='prelu'), seed=7), path)
    ours = outputs(rtsr_arch.load_model(path))
    with pytest.raises(RuntimeError, match='SRVGGNetCompact'):
        load(path)  # spandrel alone: detected as Compact, then its strict load fails
    desc = load(path, registry)
    assert desc.architecture.id == 'rtsr_arch.RTSRN' and torch.equal(outputs(desc.model), ours)
    for net, arch_id in ((Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2), 'Compact'),
                         (SAFMN(dim=8, n_blocks=1, upscaling_factor=2), 'SAFMN')):
        torch.save(net.state_dict(), tmp_path / f'{arch_id}.pth')
        assert load(tmp_path / f'{arch_id}.pth', registry).architecture.id == arch_id


# ----------------------------------------------------------------------------- what the weights do not say

def test_unstored_keywords_are_tagged_and_load_descriptor_is_exact(tmp_path, registry):
    """spandrel drops the embedded network_g: an LRSRN trained with GELU loads with the official
    ReLU, tagged as assumed (a different network: the negative control), while
    load_descriptor, which reads the embedded options, gives load_model's output."""
    path = tmp_path / 'gelu.safetensors'
    rtsr_arch.save_model(randomize(build_network({'type': 'LRSRN', 'num_feat': 8, 'num_block': 2, 'feature_size': 12,
                                                  'act_type': 'gelu'}), seed=8, std=0.5, fan_in=True), path)
    ours = outputs(rtsr_arch.load_model(path))
    desc = load(path, registry)
    assert 'assumed:act_type=relu' in desc.tags and not torch.allclose(outputs(desc.model), ours, atol=1e-3)
    exact = support.load_descriptor(path)
    assert exact.architecture.id == 'rtsr_arch.LRSRN' and exact.tags == ['8nf', '2nb']
    assert torch.equal(outputs(exact.model), ours)


# ----------------------------------------------------------------------------- opt-in only

def test_no_other_module_imports_spandrel():
    """Normal use never needs spandrel: only rtsr_arch/spandrel_support.py imports it."""
    root = Path(rtsr_arch.__file__).parent
    importers = set()
    for path in root.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ''] if isinstance(node, ast.ImportFrom) else []
            if any(n.split('.')[0] == 'spandrel' for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {'spandrel_support.py'}


def test_without_spandrel_the_support_module_fails_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, 'spandrel', None)  # as if not installed
    monkeypatch.delitem(sys.modules, 'rtsr_arch.spandrel_support')
    with pytest.raises(ImportError) as info:
        importlib.import_module('rtsr_arch.spandrel_support')
    assert str(info.value) == ("rtsr_arch.spandrel_support needs spandrel: pip install spandrel "
                               "(or pip install 'rtsr_arch[spandrel]')")


@pytest.fixture
def main_registry_restored():
    """spandrel's main registry as it was before the test (other test modules rely on it);
    ArchRegistry has no removal, so its three internal fields are put back."""
    main = spandrel.MAIN_REGISTRY
    saved = main.copy()
    yield main
    main._architectures, main._ordered, main._by_id = saved._architectures, saved._ordered, saved._by_id


def test_register_defaults_to_the_main_registry(tmp_path, main_registry_restored):
    """register() with no argument: a plain ModelLoader() then loads an LRSRN file; a second
    register() adds nothing."""
    path = tmp_path / 'lrsrn.pth'
    rtsr_arch.save_model(build_network({'type': 'LRSRN', 'num_feat': 4, 'num_block': 1, 'feature_size': 8}), path)
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_file(path)
    assert len(support.register()) == len(support.supports()) and support.register() == []
    assert spandrel.ModelLoader().load_from_file(path).architecture.id == 'rtsr_arch.LRSRN'
