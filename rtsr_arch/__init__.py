"""rtsr_arch: real-time 4K super-resolution networks as a BasicSR plugin.

``import rtsr_arch`` registers the package's architectures, datasets, models and losses into
BasicSR's registries, so BasicSR's own train/test pipelines run them from YAML.
"""
from ._compat import install_basicsr_aliases

install_basicsr_aliases()  # must run before anything imports basicsr
__version__ = '0.1.0'

from . import archs, data, losses, models  # noqa: E402,F401  (registration side effects)
from .archs.rep import ReparamBlock, reparameterize  # noqa: E402
from .loader import load_model, save_model  # noqa: E402

__all__ = ['ReparamBlock', 'reparameterize', 'load_model', 'save_model', '__version__']
