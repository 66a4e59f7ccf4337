"""BasicSR-style auto-import of a subpackage's modules by file-name suffix."""
import importlib
from pathlib import Path


def import_modules(package_name, package_file, suffix):
    """Import every ``*<suffix>.py`` beside ``package_file`` (e.g. ``*_arch.py``), sorted by name."""
    folder = Path(package_file).parent
    names = sorted(p.stem for p in folder.glob(f'*{suffix}.py'))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
