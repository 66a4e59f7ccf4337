"""Importing the plugin: basicsr 1.4.2 imports after ``import rtsr_arch`` on a modern stack, the
compatibility aliases appear only where the real module is missing, and the plugin's registry
names never collide with BasicSR's own. Import-order checks run in fresh interpreters."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path


import rtsr_arch

COMPAT_FILE = Path(rtsr_arch.__file__).with_name('_compat.py')
FUNCTIONAL_TENSOR = 'torchvision.transforms.functional_tensor'


def run_fresh(code, tmp_path):
    """Run ``code`` in a fresh interpreter (outside the repository); return its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f'exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}'
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_interpreter_imports_plugin_then_basicsr(tmp_path):
    out = run_fresh(f'''
        import importlib.util, json, sys
        assert 'basicsr' not in sys.modules and 'rtsr_arch' not in sys.modules
        real_ft = importlib.util.find_spec('torchvision.transforms') and \\
            importlib.util.find_spec({FUNCTIONAL_TENSOR!r}) is not None
        import rtsr_arch
        import basicsr
        from basicsr.utils.registry import ARCH_REGISTRY as A
        from rtsr_arch.archs.lrsrn_arch import LRSRN
        from rtsr_arch.archs.rt4ksr_arch import RT4KSR
        assert A.get('LRSRN') is LRSRN and A.get('RT4KSR') is RT4KSR
        import basicsr.data.degradations, basicsr.archs.arch_util  # the two modules that break
        import torchvision.transforms.functional as F
        ft = sys.modules[{FUNCTIONAL_TENSOR!r}]
        if real_ft:
            assert ft.__name__ == {FUNCTIONAL_TENSOR!r}, ft
        else:
            assert ft is F, ft
        assert basicsr.data.degradations.rgb_to_grayscale is ft.rgb_to_grayscale
        print(json.dumps({{'real_ft': bool(real_ft), 'basicsr': basicsr.__version__}}))
    ''', tmp_path)
    assert out['basicsr'] == '1.4.2'


def test_existing_functional_tensor_module_is_left_alone(tmp_path):
    run_fresh(f'''
        import importlib.util, json, sys, types
        import torchvision.transforms.functional as F
        real_distutils = importlib.util.find_spec('distutils') is not None
        sentinel = types.ModuleType({FUNCTIONAL_TENSOR!r})
        sentinel.rgb_to_grayscale = lambda *a, **k: F.rgb_to_grayscale(*a, **k)  # a distinct object
        sys.modules[{FUNCTIONAL_TENSOR!r}] = sentinel
        import rtsr_arch, basicsr
        assert sys.modules[{FUNCTIONAL_TENSOR!r}] is sentinel
        import basicsr.data.degradations as d
        assert d.rgb_to_grayscale is sentinel.rgb_to_grayscale  # basicsr got the sentinel, not an alias
        if real_distutils:  # a real distutils must not be replaced by the shim either
            import distutils.version
            assert distutils.version.LooseVersion is not rtsr_arch._compat.LooseVersion
            assert getattr(distutils.version, '__file__', None), distutils.version
        print(json.dumps({{'real_distutils': real_distutils}}))
    ''', tmp_path)


def test_missing_distutils_gets_a_looseversion_shim(tmp_path):
    out = run_fresh('''
        import importlib.abc, json, sys

        class NoDistutils(importlib.abc.MetaPathFinder):  # Python >= 3.12 without setuptools
            def find_spec(self, name, path=None, target=None):
                if name == 'distutils' or name.startswith('distutils.'):
                    raise ModuleNotFoundError(f"No module named '{name}'", name=name)
                return None

        for key in [k for k in sys.modules if k == 'distutils' or k.startswith('distutils.')]:
            del sys.modules[key]
        sys.meta_path.insert(0, NoDistutils())
        try:
            import distutils.version
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit('the finder did not block distutils')

        import rtsr_arch
        from distutils.version import LooseVersion
        assert LooseVersion is rtsr_arch._compat.LooseVersion
        import torchvision
        assert LooseVersion('0.10.0') > LooseVersion('0.9.0')
        assert LooseVersion('1.4.2') == LooseVersion('1.4.2') and LooseVersion('1.4.2') != LooseVersion('1.4.3')
        assert LooseVersion('1.10') > LooseVersion('1.9') and LooseVersion('2.0') >= '1.99'
        assert LooseVersion('1.0a') < LooseVersion('1.0b') and LooseVersion('0.9') <= LooseVersion('0.9')
        assert LooseVersion(torchvision.__version__) >= LooseVersion('0.9.0')
        assert str(LooseVersion('0.9.0')) == '0.9.0'
        import basicsr
        import basicsr.archs.arch_util as arch_util
        from basicsr.utils.registry import ARCH_REGISTRY
        assert arch_util.LooseVersion is LooseVersion
        assert ARCH_REGISTRY.get('RT4KSR') is not None
        print(json.dumps({'basicsr': basicsr.__version__}))
    ''', tmp_path)
    assert out['basicsr'] == '1.4.2'


def test_registry_names_do_not_collide_with_basicsr(tmp_path):
    out = run_fresh(f'''
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location('_rtsr_compat_standalone', {str(COMPAT_FILE)!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)
        compat.install_basicsr_aliases()
        assert 'rtsr_arch' not in sys.modules
        import basicsr
        from basicsr.utils import registry as R
        names = ['ARCH_REGISTRY', 'DATASET_REGISTRY', 'MODEL_REGISTRY', 'LOSS_REGISTRY', 'METRIC_REGISTRY']
        regs = {{n: getattr(R, n) for n in names}}
        before = {{n: dict(r._obj_map) for n, r in regs.items()}}
        assert len(before['ARCH_REGISTRY']) > 20 and 'ECBSR' in before['ARCH_REGISTRY']
        assert 'rtsr_arch' not in sys.modules
        import rtsr_arch
        added = {{}}
        for n, reg in regs.items():
            after = dict(reg._obj_map)
            for key, obj in before[n].items():
                assert after.get(key) is obj, f'{{n}}: {{key}} was replaced'
            new = sorted(set(after) - set(before[n]))
            lower = {{k.lower() for k in before[n]}}
            for key in new:
                obj = after[key]
                assert obj.__module__.startswith('rtsr_arch.'), (key, obj.__module__)
                assert key.lower() not in lower, f'{{n}}: {{key}} differs from a basicsr name only in case'
                # get(name) falls back to name + '_basicsr': registering such a name would shadow it
                assert key + '_basicsr' not in before[n] and not key.endswith('_basicsr'), key
            added[n] = new
        expect = {{'ARCH_REGISTRY': ('ECBSR', 'basicsr.archs.ecbsr_arch'),
                   'DATASET_REGISTRY': ('PairedImageDataset', 'basicsr.data.paired_image_dataset'),
                   'MODEL_REGISTRY': ('SRModel', 'basicsr.models.sr_model'),
                   'LOSS_REGISTRY': ('L1Loss', 'basicsr.losses.')}}
        for n, (key, module) in expect.items():
            obj = regs[n].get(key)
            assert obj is before[n][key] and obj.__module__.startswith(module), (key, obj.__module__)
        print(json.dumps({{'added': added}}))
    ''', tmp_path)
    assert {'LRSRN', 'RT4KSR'} <= set(out['added']['ARCH_REGISTRY'])
