"""Auto-imports every ``*_dataset.py`` module here so its classes register into BasicSR (as BasicSR's own data)."""
from rtsr_arch.utils.scan import import_modules

_modules = import_modules(__name__, __file__, '_dataset')
