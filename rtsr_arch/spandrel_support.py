"""Opt-in registration of this package's architectures in spandrel (chaiNNer-org/spandrel).

spandrel is the loader of the super-resolution front-ends (chaiNNer and others). It already knows
SPAN: this package's SPAN checkpoints in training form with 6 blocks load there unchanged and stay
with spandrel's own loader. ::

    import rtsr_arch.spandrel_support
    rtsr_arch.spandrel_support.register()   # adds the others to spandrel.MAIN_REGISTRY (idempotent)
    model = spandrel.ModelLoader().load_from_file('lrsrn_x2.pth')

:func:`register` adds one :class:`spandrel.ArchSupport` per architecture of ``rtsr_arch.archs``
whose official licence allows it (:func:`licence_allows`) and that has an importer: detection
is the importer's (:func:`rtsr_arch.archs.official.find_importers`, so this package's
checkpoints and the official ones are both recognised), loading is :func:`rtsr_arch.load_model`'s
(built in float64, loaded strictly, fused, cast to float32), and the descriptor carries the
declared scale, channels, size requirements (``input_multiple``, ``min_input_size``), fp16
support (``fp16_safe``) and tiling (``tile_exact``). The ids are ``rtsr_arch.<name>``, so they
never collide with spandrel's.

spandrel reads only the weights (it drops the ``network_g`` options this package embeds), so
keywords the weights do not store (e.g. LRSRN's ``act_type``) take the importer's official value;
the descriptor's tags list them (``assumed:act_type=relu``). :func:`load_descriptor` reads a file
with the embedded options and gives the same kind of descriptor, exact for every checkpoint.

This module needs spandrel (``pip install 'rtsr_arch[spandrel]'``); nothing else in the package
imports it.
"""
import re

try:
    from spandrel import (MAIN_REGISTRY, Architecture, ArchSupport, ImageModelDescriptor, ModelTiling,
                          SizeRequirements)
except ImportError as exc:  # one line, not spandrel's traceback
    raise ImportError("rtsr_arch.spandrel_support needs spandrel: pip install spandrel "
                      "(or pip install 'rtsr_arch[spandrel]')") from exc

from basicsr.utils.registry import ARCH_REGISTRY

from .archs.contract import SRArch
from .archs.official import IMPORTERS, find_importers
from .archs.rep import reparameterize
from .loader import import_checkpoint, load_model
from .utils.checkpoint import load_state_dict_checked
from .utils.options import build_network

__all__ = ['register', 'supports', 'licence_allows', 'load_descriptor', 'descriptor', 'PERMITTED_LICENCES',
           'ID_PREFIX']

ID_PREFIX = 'rtsr_arch.'

# licences whose terms allow any use of the code, with notice: registering is fine
PERMITTED_LICENCES = ('MIT', 'Apache-2.0', 'BSD-2-Clause', 'BSD-3-Clause')
# no licence published with the official code: registering ships nothing of it (the network is this
# package's own Apache-2.0 implementation); the official weights' terms stay the user's concern
NO_LICENCE = 'none stated'
_LICENCE_TEXT = re.compile(r'(?P<main>[^()]+?)\s*(?:\((?:[^():]*:)?\s*(?P<part>[^()]+?)\s*\))?')

# spandrel architectures whose detection claims some of our checkpoints but cannot load them:
# a PReLU RTSRN's body.0/body.1 keys match RealESRGAN Compact's; spandrel's SPAN has exactly 6 blocks
_CLAIMED_BY = {'RTSRN': ('Compact',), 'SPAN': ('SPAN',)}


def licence_allows(text):
    """Whether an architecture's declared licence (``cls.license``: ``'MIT'``, ``'Apache-2.0
    (NTIRE2023_ESR/ folder: MIT)'``, ``'none stated'``) allows registering it: every licence named
    is permissive, or none was published. Anything else (non-commercial, copyleft, unknown, empty)
    does not."""
    match = _LICENCE_TEXT.fullmatch(text.strip())
    if not match:
        return False
    names = [n for n in (match['main'], match['part']) if n]
    return names == [NO_LICENCE] or all(n in PERMITTED_LICENCES for n in names)


def _spandrel_span_loads(state_dict):
    """spandrel's own SPAN loads it exactly: the training layout (Conv3XC branches) with blocks 1..6."""
    blocks = {k.split('.', 1)[0] for k in state_dict if k.startswith('block_')}
    return 'conv_1.sk.weight' in state_dict and blocks == {f'block_{i}' for i in range(1, 7)}


_SPANDREL_NATIVE = {'SPAN': _spandrel_span_loads}


def descriptor(model, architecture, assumed=()):
    """spandrel's :class:`ImageModelDescriptor` of one of this package's networks (as it is: spandrel
    reloads its own state dict), from what the network declares. ``assumed``: ``(keyword, value)``
    pairs the weights did not determine."""
    opt = model.network_opt
    size = SizeRequirements(minimum=model.min_input_size, multiple_of=model.input_multiple)
    tags = [f"{opt[k]}{t}" for k, t in (('num_feat', 'nf'), ('num_block', 'nb')) if k in opt]
    tags += [f'assumed:{k}={v}' for k, v in assumed]
    return ImageModelDescriptor(
        model, model.state_dict(), architecture=architecture, purpose='SR' if model.upscale > 1 else 'Restoration',
        tags=tags, supports_half=model.fp16_safe, supports_bfloat16=model.fp16_safe, scale=model.upscale,
        input_channels=opt['num_in_ch'], output_channels=opt['num_out_ch'], size_requirements=size,
        tiling=ModelTiling.SUPPORTED if model.tile_exact else ModelTiling.DISCOURAGED)


class RTSRArchitecture(Architecture):
    """One architecture of this package as spandrel sees it: detected by its importer, loaded as
    :func:`rtsr_arch.load_model` loads it (deploy form, float32)."""

    def __init__(self, name):
        self.arch_name = name
        super().__init__(id=ID_PREFIX + name, name=name, detect=self._detect)

    def _detect(self, state_dict):
        native = _SPANDREL_NATIVE.get(self.arch_name)
        if native is not None and native(state_dict):
            return False
        return [importer.arch for importer, _ in find_importers(state_dict)] == [self.arch_name]

    def load(self, state_dict):
        source = f'{self.arch_name} state dict (spandrel)'
        result, _ = import_checkpoint(state_dict, self.arch_name, source=source)
        model = build_network(result.network_opt, source=source).double()
        load_state_dict_checked(model, result.state_dict, source)
        assumed = [(k, model.network_opt[k]) for k in result.assumed if k != 'deploy']
        reparameterize(model)
        return descriptor(model.float().eval(), self, assumed)


def _registrable():
    """Names of the registered architectures spandrel can get: an importer (detection) and a licence
    that allows it."""
    return [name for name, cls in sorted(ARCH_REGISTRY)
            if issubclass(cls, SRArch) and name in IMPORTERS and licence_allows(cls.license)]


def supports():
    """One :class:`spandrel.ArchSupport` per architecture :func:`register` adds."""
    return [ArchSupport.from_architecture(RTSRArchitecture(name), before=_CLAIMED_BY.get(name, ()))
            for name in _registrable()]


def register(registry=MAIN_REGISTRY):
    """Add this package's architectures to spandrel's ``registry`` (default: the one every
    ``ModelLoader()`` uses); idempotent. Returns the :class:`spandrel.ArchSupport` entries added."""
    return registry.add(*supports(), ignore_duplicates=True)


def load_descriptor(path):
    """The spandrel descriptor of the checkpoint at ``path``, loaded by :func:`rtsr_arch.load_model`
    (embedded ``network_g`` options honoured: exact for checkpoints whose keywords the weights do
    not determine)."""
    model = load_model(path)
    return descriptor(model, RTSRArchitecture(type(model).__name__))
