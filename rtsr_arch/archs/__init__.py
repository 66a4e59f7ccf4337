"""Architectures. Every ``*_arch.py`` here is imported so its networks register into BasicSR's
``ARCH_REGISTRY`` (as BasicSR's own ``basicsr/archs``); the reparameterizable blocks live in
:mod:`rtsr_arch.archs.rep`."""
from rtsr_arch.utils.scan import import_modules

_arch_modules = import_modules(__name__, __file__, '_arch')
