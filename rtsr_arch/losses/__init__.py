"""Auto-imports every ``*_loss.py`` module here so its classes register into BasicSR (as BasicSR's own losses)."""
from rtsr_arch.utils.scan import import_modules

_modules = import_modules(__name__, __file__, '_loss')
