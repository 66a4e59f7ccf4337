"""Importers of official third-party checkpoints: one per architecture, each with a detection
condition on the state-dict keys and shapes.

An importer is registered next to its architecture with :func:`register_importer`. It receives
the official state dict already unwrapped (``params``, ``params_ema``, ``state_dict``,
``model_state_dict``, Lightning checkpoints) and stripped of wrapper prefixes (``module.``,
``network.``, ``model.``) by :func:`official_state_dict`, plus the user's ``key=value``
overrides, and returns an :class:`OfficialImport`: the state dict in this package's layout and
the ``network_g`` options, of which everything the weights determine (channels, blocks, scale,
form) is inferred; what they cannot determine is listed in ``assumed`` with a note.

:func:`find_importers` returns the importers whose detection matches a checkpoint; building and
loading the network is :func:`rtsr_arch.loader.import_official`.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..utils.checkpoint import PickledPlaceholder, module_state_dict

__all__ = ['OfficialImport', 'Importer', 'IMPORTERS', 'register_importer', 'official_state_dict', 'find_importers',
           'get_importer', 'OfficialImportError', 'PickledModuleStateDict',
           # helpers for importers
           'top_level_names', 'count_indexed', 'numbered', 'numbered_layout', 'count_numbered', 'trunk_options',
           'resolve_aliases', 'check_width', 'infer_upscale', 'expansion_ratio', 'ImportNotes', 'unstored_note',
           'official_note', 'OFFICIAL_LEAKY_RELU']

# how importer notes name the activation of RFDN, RLFN and their descendants (the official ``activation('lrelu')``)
OFFICIAL_LEAKY_RELU = 'the official LeakyReLU (slope 0.05)'

WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'net', 'network')
WRAPPER_PREFIXES = ('module.', 'network.', 'model.')


class OfficialImportError(ValueError):
    """An official checkpoint that cannot be imported as asked; the message is one line."""


@dataclass
class OfficialImport:
    """What an importer returns: ``state_dict`` in this package's layout, the ``network_opt``
    (``network_g``) to build, the keywords it had to ``assume`` (not determined by the weights)
    and ``notes`` for the user."""
    state_dict: dict
    network_opt: dict
    notes: list = field(default_factory=list)
    assumed: tuple = ()


@dataclass
class Importer:
    arch: str
    convert: Callable  # (state_dict, overrides) -> OfficialImport
    detect: Callable  # (state_dict) -> bool
    param_keys: tuple  # which entry of a {'params', 'params_ema'} checkpoint holds the official weights


IMPORTERS = {}


def register_importer(arch, detect, param_keys=('params', 'params_ema')):
    """Decorator: register ``convert(state_dict, overrides) -> OfficialImport`` for ``arch``,
    used for every checkpoint whose unwrapped state dict satisfies ``detect(state_dict)``.
    ``param_keys``: the preferred entries of checkpoints that hold several (the one the official
    inference code uses first)."""

    def decorator(convert):
        IMPORTERS[arch] = Importer(arch, convert, detect, tuple(param_keys))
        return convert

    return decorator


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


class PickledModuleStateDict(dict):
    """The state dict of a whole pickled ``nn.Module`` (``torch.save(model)``, e.g. PRFDN's NTIRE
    2023 file) that :func:`rtsr_arch.utils.checkpoint.restricted_load` read without running any
    code from the file; ``pickled_class`` is the module's class as the pickle names it."""
    pickled_class = ''


def _pickled_module_class(obj):
    """The class name of a pickled ``nn.Module`` placeholder (restricted reader), else ''."""
    if isinstance(obj, PickledPlaceholder) and all(isinstance(vars(obj).get(k), dict)
                                                   for k in ('_parameters', '_buffers', '_modules')):
        return obj.pickled_name
    return ''


def official_state_dict(checkpoint, param_keys=('params', 'params_ema')):
    """The tensor dict inside ``checkpoint``: its first ``param_keys`` entry that is a state dict,
    else a wrapper's (``state_dict`` — Lightning and most training scripts —, ``model_state_dict``,
    ...), else the dict itself; with a wrapper prefix (``module.``, ``network.``, ``model.``)
    removed when every key has it. A whole pickled ``nn.Module`` read by the restricted reader
    gives its module state dict, as a :class:`PickledModuleStateDict` naming the class."""
    pickled = _pickled_module_class(checkpoint)
    if pickled:
        checkpoint = module_state_dict(checkpoint)
    if not isinstance(checkpoint, dict):
        raise OfficialImportError(f'expected a state dict or a training checkpoint holding one, '
                                  f'got {type(checkpoint).__name__}')
    found = next((checkpoint[k] for k in (*param_keys, *WRAPPER_KEYS) if _is_state_dict(checkpoint.get(k))), None)
    if found is None:
        if not _is_state_dict(checkpoint):
            raise OfficialImportError(f"no state dict found (top-level keys: {', '.join(map(str, list(checkpoint)[:6]))})")
        found = checkpoint
    sd = dict(found)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    if pickled:
        sd = PickledModuleStateDict(sd)
        sd.pickled_class = pickled
    return sd


def find_importers(checkpoint):
    """``[(importer, state_dict)]`` for every registered importer whose detection matches."""
    matches = []
    for importer in IMPORTERS.values():
        try:
            sd = official_state_dict(checkpoint, importer.param_keys)
            if importer.detect(sd):
                matches.append((importer, sd))
        except (OfficialImportError, KeyError, IndexError, AttributeError, TypeError, ValueError):
            continue
    return matches


def get_importer(arch):
    """The importer registered for ``arch``; an unknown name lists the available ones."""
    if arch not in IMPORTERS:
        raise OfficialImportError(f"no importer for architecture '{arch}'; available importers: "
                                  f"{', '.join(sorted(IMPORTERS))}")
    return IMPORTERS[arch]


# ----------------------------------------------------------------------------- helpers for importers

def top_level_names(state_dict):
    """The set of first key components (``{'head', 'backbone', 'transition'}`` for LRSRN)."""
    return {k.split('.', 1)[0] for k in state_dict}


def count_indexed(state_dict, prefix):
    """Number of distinct ``i`` in keys ``<prefix>.<i>.…`` (e.g. blocks of an ``nn.Sequential``)."""
    found = {k[len(prefix) + 1:].split('.')[0] for k in state_dict if k.startswith(prefix + '.')}
    return len([i for i in found if i.isdigit()])


def numbered(state_dict, prefix):
    """The sorted numbers ``i`` of the top-level names ``<prefix><i>`` (blocks registered as
    ``block_1``, ``B2``, ``reprfb3``, ...)."""
    pattern = re.compile(re.escape(prefix) + r'(\d+)')
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, top_level_names(state_dict)) if m)


def numbered_layout(state_dict, names, prefix):
    """Whether the top-level names are exactly ``names`` plus at least one numbered block
    ``<prefix><i>``."""
    blocks = numbered(state_dict, prefix)
    return bool(blocks) and top_level_names(state_dict) == set(names) | {f'{prefix}{i}' for i in blocks}


def count_numbered(state_dict, prefix, arch):
    """The number n of blocks ``<prefix>1`` .. ``<prefix>n``; other numberings are an
    :class:`OfficialImportError`."""
    blocks = numbered(state_dict, prefix)
    if blocks != list(range(1, len(blocks) + 1)):
        raise OfficialImportError(f'{arch} blocks must be {prefix}1..{prefix}{len(blocks)}, found {blocks}')
    return len(blocks)


def trunk_options(state_dict, overrides, arch, head, upsampler, num_block, **keywords):
    """The keywords every importer of a head conv -> blocks -> pixel-shuffle network reads the same
    way, in this order: ``type`` (``arch``), ``num_in_ch`` and ``num_feat`` (from the weight of the
    first conv ``head``), ``num_out_ch`` (the override, else ``num_in_ch``), ``num_block``, the
    architecture's own ``keywords``, and ``upscale`` (from the weight of the pixel-shuffle conv
    ``upsampler``)."""
    num_feat, num_in_ch = state_dict[f'{head}.weight'].shape[:2]
    num_out_ch = int(overrides.get('num_out_ch', num_in_ch))
    return dict(type=arch, num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block,
                **keywords, upscale=infer_upscale(state_dict[f'{upsampler}.weight'].shape[0], num_out_ch))


def resolve_aliases(state_dict, aliases):
    """A copy of ``state_dict`` in which every key ``<prefix>.<alias>`` (an official module that
    registers a parameter a second time under another name, ``aliases``: ``{alias: name}``) is
    stored once, as ``<prefix>.<name>``; the two copies must be equal."""
    sd = dict(state_dict)
    for key in [k for k in sd if k.rsplit('.', 1)[-1] in aliases]:
        prefix, alias = key.rsplit('.', 1)
        target = f'{prefix}.{aliases[alias]}'
        if target in sd and not torch.equal(sd[target], sd[key]):
            raise OfficialImportError(f"alias key '{key}' differs from '{target}'; the checkpoint is inconsistent")
        sd.setdefault(target, sd.pop(key))
    return sd


def check_width(state_dict, key, expected, what, rule):
    """An :class:`OfficialImportError` unless ``state_dict[key]`` has ``expected`` outputs (dim 0):
    '<what> <found> is not <rule> = <expected> (the official network)'."""
    found = state_dict[key].shape[0]
    if found != expected:
        raise OfficialImportError(f'{what} {found} is not {rule} = {expected} (the official network)')


def expansion_ratio(expanded, channels, what='expanded features'):
    """``expanded // channels`` (a training-form expansion ratio read from a width); a width that is
    not a multiple is an :class:`OfficialImportError`."""
    ratio, rest = divmod(expanded, channels)
    if rest:
        raise OfficialImportError(f'{expanded} {what} are not an integer multiple of {channels}')
    return ratio


def infer_upscale(out_channels, num_out_ch, shuffle_per_scale=1):
    """Scale s from a PixelShuffle conv with ``num_out_ch * (shuffle_per_scale * s)**2`` outputs."""
    ratio, rest = divmod(out_channels, num_out_ch)
    root = math.isqrt(ratio)
    if rest or root * root != ratio or root % shuffle_per_scale:
        raise OfficialImportError(f'{out_channels} output channels do not fit {num_out_ch} image channels times a '
                                  f'square pixel-shuffle factor')
    return root // shuffle_per_scale


def unstored_note(key, using):
    """The note on a keyword the weights do not store; ``using`` says which value is taken."""
    return f'{key}: not stored in the weights; using {using} (override with --set {key}=...)'


def official_note(key, value, arch):
    """The note on a keyword the weights do not say, taken as the official ``arch`` has it."""
    return f'{key}: {value}, as the official {arch} (the weights do not say)'


class ImportNotes:
    """What an importer tells the user, collected in order: ``notes`` and the ``assumed`` keywords
    (those the weights do not determine), given the user's ``overrides``."""

    def __init__(self, overrides, assumed=()):
        self.overrides = overrides
        self.notes = []
        self.assumed = list(assumed)

    def note(self, text):
        self.notes.append(text)

    def assume(self, opt, key, value, note):
        """``opt[key]``: the override when given, else ``value``, then listed as assumed with ``note``."""
        opt[key] = self.overrides.get(key, value)
        if key not in self.overrides:
            self.assumed.append(key)
            self.notes.append(note)

    def expansion(self, opt, key, state_dict, expanded, channels, note, value=2):
        """``opt[key]``, a training-form expansion ratio: read from the width of the expanded conv
        ``state_dict[expanded]`` (:func:`expansion_ratio`) when the state dict is in training form,
        else (a deploy checkpoint does not store it) :meth:`assume` ``value`` with ``note``."""
        if expanded in state_dict:
            opt[key] = expansion_ratio(state_dict[expanded].shape[0], channels)
        else:
            self.assume(opt, key, value, note)

    def unstored(self, opt, key, value, using):
        """:meth:`assume` ``value`` for a keyword the weights do not store (:func:`unstored_note`)."""
        self.assume(opt, key, value, unstored_note(key, using))

    def official(self, opt, key, value, arch):
        """:meth:`assume` the official ``value`` of a keyword the weights do not say (:func:`official_note`)."""
        self.assume(opt, key, value, official_note(key, value, arch))

    def activation(self, opt, prelu, value, using):
        """``act_type``: 'prelu' when the weights hold PReLU slopes (``prelu``), else :meth:`unstored`."""
        if prelu:
            opt['act_type'] = 'prelu'
        else:
            self.unstored(opt, 'act_type', value, using)

    def single_form(self, arch):
        """The note of a network without reparameterizable blocks, unless ``deploy`` is overridden."""
        if 'deploy' not in self.overrides:
            self.notes.append(f'deploy: {arch} has no reparameterizable block; its training and deploy forms are the '
                              f'same network (deploy=False)')

    def params_preferred(self, script):
        """The note of an importer registered with ``param_keys=('params', 'params_ema')`` because the
        official ``script`` loads 'params'."""
        self.notes.append(f"weights: the official {script} loads 'params' of {{params, params_ema}} checkpoints, "
                          f"preferred here; param_key='params_ema' selects the EMA weights")

    def result(self, state_dict, opt):
        """The :class:`OfficialImport` of ``state_dict`` with ``opt`` updated by the overrides."""
        opt.update(self.overrides)
        return OfficialImport(state_dict, opt, self.notes, tuple(self.assumed))
