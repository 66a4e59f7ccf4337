"""Import aliases that let basicsr 1.4.2 import on current torchvision and on Python >= 3.12.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17)
and ``distutils.version.LooseVersion`` (``distutils`` left the standard library in Python 3.12).
Each alias is installed only when the real module cannot be found; nothing else of basicsr is
touched. ``import rtsr_arch`` runs :func:`install_basicsr_aliases` before anything imports basicsr.
"""
import importlib.util
import re
import sys
import types

import torchvision.transforms.functional

__all__ = ['install_basicsr_aliases']

_FUNCTIONAL_TENSOR = 'torchvision.transforms.functional_tensor'


def _module_exists(name):
    try:
        return name in sys.modules or importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class LooseVersion:
    """The comparison semantics of ``distutils.version.LooseVersion`` (numbers and words)."""

    _component = re.compile(r'(\d+|[a-z]+|\.)', re.VERBOSE)

    def __init__(self, vstring):
        self.vstring = str(vstring)
        parts = [p for p in self._component.split(self.vstring) if p and p != '.']
        self.version = [int(p) if p.isdigit() else p for p in parts]

    def _cmp(self, other):
        other = other if isinstance(other, LooseVersion) else LooseVersion(other)
        return (self.version > other.version) - (self.version < other.version)

    def __eq__(self, other):
        return self._cmp(other) == 0

    def __lt__(self, other):
        return self._cmp(other) < 0

    def __le__(self, other):
        return self._cmp(other) <= 0

    def __gt__(self, other):
        return self._cmp(other) > 0

    def __ge__(self, other):
        return self._cmp(other) >= 0

    def __str__(self):
        return self.vstring

    def __repr__(self):
        return f"LooseVersion('{self.vstring}')"


def _alias_functional_tensor():
    if _module_exists(_FUNCTIONAL_TENSOR):
        return
    sys.modules[_FUNCTIONAL_TENSOR] = torchvision.transforms.functional


def _alias_distutils_version():
    if _module_exists('distutils.version'):
        return
    distutils = sys.modules.get('distutils') or types.ModuleType('distutils')
    version = types.ModuleType('distutils.version')
    version.LooseVersion = LooseVersion
    distutils.version = version
    sys.modules.setdefault('distutils', distutils)
    sys.modules['distutils.version'] = version


def install_basicsr_aliases():
    """Install the two aliases basicsr 1.4.2 needs, each only where the real module is missing."""
    _alias_functional_tensor()
    _alias_distutils_version()
