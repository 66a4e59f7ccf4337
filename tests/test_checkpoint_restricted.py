"""rtsr_arch.utils.checkpoint's restricted reader: checkpoints that torch's weights-only unpickler
refuses (PyTorch-Lightning checkpoints, whole pickled modules) are read without running any code
from the file. Malicious pickles (os.system, exec, getattr-bound methods, forged tensor views)
execute nothing; every tensor is recovered, bit for bit, from containers, placeholders'
attributes and pickled modules."""
import collections
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import rtsr_arch  # noqa: F401  (basicsr import aliases before anything imports basicsr)
from rtsr_arch.utils.checkpoint import (CheckpointError, PickledPlaceholder, find_tensors, load_checkpoint,
                                        module_state_dict, restricted_load)

FIXTURES_DIR = Path(os.environ.get('RTSR_OFFICIAL_FIXTURES') or Path(__file__).resolve().parents[2] /
                    'shared/fixtures/official')


def fixture(name):
    path = FIXTURES_DIR / name
    if not path.is_file():
        pytest.skip(f'official fixture {path} not found (set RTSR_OFFICIAL_FIXTURES)')
    return path


def refused_by_weights_only(path):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)


# ----------------------------------------------------------------------------- malicious pickles

class ShellPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class ExecPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()',)


class BoundMethodPayload:
    """Pickled as ``getattr(PosixPath(marker), 'touch')()``: a global, a REDUCE, a REDUCE."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path(self.marker).touch, ()


class SubprocessPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return subprocess.call, ([sys.executable, '-c', f'open({self.marker!r}, "w").close()'],)


PAYLOADS = {'shell': ShellPayload, 'exec': ExecPayload, 'bound_method': BoundMethodPayload,
            'subprocess': SubprocessPayload}


@pytest.mark.parametrize('kind', list(PAYLOADS))
def test_negative_control_the_payloads_are_real(kind, tmp_path):
    """Running a payload's own reduce tuple (what any unrestricted unpickler does) creates its marker."""
    marker = tmp_path / f'{kind}.marker'
    func, args = PAYLOADS[kind](marker).__reduce__()
    func(*args)
    assert marker.exists()


def test_malicious_pickle_executes_nothing_and_keeps_the_tensors(tmp_path):
    markers = {kind: tmp_path / f'{kind}.marker' for kind in PAYLOADS}
    weight = torch.randn(4, 3, 3, 3)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'conv.weight': weight}, 'note': 'hello', 'epoch': 3,
                **{kind: PAYLOADS[kind](marker) for kind, marker in markers.items()},
                'nested': [{'deep': ShellPayload(markers['shell'])}]}, path)
    refused_by_weights_only(path)  # so load_checkpoint takes the restricted path
    checkpoint = load_checkpoint(path)
    assert not any(m.exists() for m in markers.values()), 'a payload ran'
    assert torch.equal(checkpoint['state_dict']['conv.weight'], weight)
    assert checkpoint['note'] == 'hello' and checkpoint['epoch'] == 3
    for kind in PAYLOADS:
        assert isinstance(checkpoint[kind], PickledPlaceholder), kind
    assert checkpoint['shell'].pickled_name == 'posix.system' if os.name == 'posix' else True
    assert checkpoint['shell'].pickled_args == (f'touch {markers["shell"]}',)  # recorded, not run
    assert checkpoint['exec'].pickled_name == 'builtins.exec'
    assert isinstance(checkpoint['nested'][0]['deep'], PickledPlaceholder)
    # the bound method went through builtins.getattr, which is a placeholder too: calling the
    # "method" it returned gave another placeholder
    assert 'getattr' in checkpoint['bound_method'].pickled_name
    assert not any(m.exists() for m in markers.values())


class ForgedView:
    """A tensor rebuilt from a storage of the file with a size beyond the storage."""

    def __init__(self, storage, size):
        self.storage, self.size = storage, size

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (self.size,), (1,), False, collections.OrderedDict())


class ForgedStorage:
    """A tensor "rebuilt" from something that is not a storage of the file."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (ShellPayload('/nonexistent/x'), 0, (2,), (1,), False,
                                                 collections.OrderedDict())


def test_forged_tensors_are_refused_in_one_line(tmp_path):
    storage = torch.arange(4.0).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    ok = tmp_path / 'ok.pth'
    # the payload first: torch's weights-only unpickler refuses it before it reaches the tensor
    torch.save({'evil': ShellPayload(tmp_path / 'm'), 't': ForgedView(typed, 4)}, ok)
    refused_by_weights_only(ok)
    assert torch.equal(load_checkpoint(ok)['t'], torch.arange(4.0))  # an in-bounds view is fine
    for name, obj in (('beyond.pth', ForgedView(typed, 1000)), ('not_storage.pth', ForgedStorage())):
        path = tmp_path / name
        torch.save({'evil': ShellPayload(tmp_path / 'm'), 't': obj}, path)
        refused_by_weights_only(path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert '\n' not in str(info.value) and 'restricted reader' in str(info.value)
    assert not (tmp_path / 'm').exists()


# ----------------------------------------------------------------------------- what is recovered

def test_plain_values_shared_storages_and_parameters_survive(tmp_path):
    base = torch.randn(6, dtype=torch.float64)
    view = base[2:]
    param = nn.Parameter(torch.randn(3))
    obj = {'base': base, 'view': view, 'param': param, 'size': torch.Size([2, 3]), 'dtype': torch.float16,
           'device': torch.device('cpu'), 'od': collections.OrderedDict(a=1), 'tuple': (1, 'x', None),
           'set': {1, 2}, 'half': torch.randn(2, 2).half(), 'long': torch.arange(5),
           'optimizer_cls': torch.optim.Adam}
    path = tmp_path / 'values.pth'
    torch.save(obj, path)
    refused_by_weights_only(path)
    got = load_checkpoint(path)
    assert torch.equal(got['base'], base) and torch.equal(got['view'], view)
    assert got['view'].untyped_storage().data_ptr() == got['base'].untyped_storage().data_ptr()  # still shared
    assert isinstance(got['param'], nn.Parameter) and got['param'].requires_grad and torch.equal(got['param'], param)
    assert got['size'] == torch.Size([2, 3]) and got['dtype'] is torch.float16 and got['device'] == torch.device('cpu')
    assert got['od'] == collections.OrderedDict(a=1) and got['tuple'] == (1, 'x', None) and got['set'] == {1, 2}
    assert got['half'].dtype == torch.float16 and got['long'].dtype == torch.int64
    assert isinstance(got['optimizer_cls'], type) and got['optimizer_cls'].pickled_name == 'torch.optim.adam.Adam'


def test_a_whole_pickled_module_gives_its_state_dict(tmp_path):
    """``torch.save(model)`` (what the PRFDN NTIRE 2023 entry published): the module classes become
    placeholders whose restored ``_parameters``/``_buffers``/``_modules`` give the exact state dict,
    non-persistent buffers excluded."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
                          nn.Sequential(nn.Conv2d(4, 2, 1, bias=False), nn.PReLU(2)))
    model[1].running_mean.normal_()
    model[3].register_buffer('scratch', torch.ones(1), persistent=False)
    path = tmp_path / 'module.pth'
    torch.save(model, path)
    refused_by_weights_only(path)
    obj = load_checkpoint(path)
    assert isinstance(obj, PickledPlaceholder) and obj.pickled_name == 'torch.nn.modules.container.Sequential'
    sd, ref = module_state_dict(obj), model.state_dict()
    assert list(sd) == list(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    found = find_tensors({'model': obj})
    assert list(found) == [f'model.{k}' for k in sd] and all(torch.equal(found[f'model.{k}'], v) for k, v in sd.items())
    with pytest.raises(ValueError, match='not a pickled nn.Module'):
        module_state_dict(PickledPlaceholder())


def test_find_tensors_walks_containers_and_placeholders(tmp_path):
    w = torch.randn(2)
    opt = torch.optim.SGD([nn.Parameter(torch.randn(3))], lr=0.1)
    path = tmp_path / 'mixed.pth'
    torch.save({'a': [w, {'b': w * 2}], 'opt': opt}, path)
    found = find_tensors(load_checkpoint(path))
    assert torch.equal(found['a.0'], w) and torch.equal(found['a.1.b'], w * 2)
    assert any(k.startswith('opt.param_groups.0.params.0') for k in found)  # the optimizer's parameter


def test_lightning_checkpoint_fixture(tmp_path):
    """huai-chang/RVSR ``pretrained.ckpt`` (PyTorch-Lightning 1.5): the optimizer object in its
    hyper-parameters is the only foreign class; everything else is plain data."""
    checkpoint = load_checkpoint(fixture('rvsr_train.ckpt'))
    assert checkpoint['epoch'] == 2980 and checkpoint['global_step'] == 417_200
    sd = checkpoint['state_dict']
    assert len(sd) == 212 and sum(v.numel() for v in sd.values()) == 221_168
    optimizer = checkpoint['hyper_parameters']['conf']['trainer']['lr_scheduler']['params']['optimizer']
    assert isinstance(optimizer, PickledPlaceholder) and optimizer.pickled_name == 'torch.optim.adam.Adam'
    assert optimizer.param_groups[0]['betas'] == (0.9, 0.999)
    assert checkpoint['optimizer_states'][0]['param_groups'][0]['lr'] == 0.00038994444444444444


def test_whole_pickled_module_fixture():
    """yindaheng98/NTIRE2023_ESR ``PRFDN_28.992.pth``: a whole pickled RFDN-style module saved
    from ``cuda:0``; read on the CPU without its classes: 128 tensors, 616,312 parameters."""
    obj = load_checkpoint(fixture('prfdn_seu.pth'))
    assert obj.pickled_name == 'models.rfdn_half.RFDNEXP.RFDNEXP'
    sd = module_state_dict(obj)
    assert len(sd) == 128 and sum(v.numel() for v in sd.values()) == 616_312
    assert all(v.device.type == 'cpu' for v in sd.values())
    assert {'fea_conv.weight', 'B1.esa.conv4.weight', 'upsampler.0.weight'} <= set(sd)


# ----------------------------------------------------------------------------- refusals

@pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::FutureWarning')  # torch's own, about TorchScript
def test_torchscript_and_legacy_files_are_refused_in_one_line(tmp_path):
    scripted = tmp_path / 'scripted.pt'
    torch.jit.script(nn.Conv2d(3, 3, 1)).save(str(scripted))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(scripted)
    assert '\n' not in str(info.value)
    with pytest.raises(pickle.UnpicklingError, match='TorchScript'):
        restricted_load(scripted)

    legacy = tmp_path / 'legacy.pth'
    torch.save({'opt': torch.optim.Adam, 'w': torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    with pytest.raises(CheckpointError, match='torch.optim.adam.Adam') as info:  # torch's refusal, not retried
        load_checkpoint(legacy)
    assert '\n' not in str(info.value)
    with pytest.raises(pickle.UnpicklingError, match='zip-format'):
        restricted_load(legacy)


def test_weights_only_files_do_not_use_the_restricted_reader(tmp_path, monkeypatch):
    path = tmp_path / 'plain.pth'
    torch.save({'w': torch.ones(2)}, path)

    def fail(_):
        raise AssertionError('restricted reader used for a weights-only file')

    monkeypatch.setattr('rtsr_arch.utils.checkpoint.restricted_load', fail)
    assert torch.equal(load_checkpoint(path)['w'], torch.ones(2))
