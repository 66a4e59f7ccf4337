"""The architecture contract: what every registered network declares, and how it is constructed.

Every architecture is one ``<name>_arch.py`` holding one class registered in BasicSR's
``ARCH_REGISTRY`` that subclasses :class:`SRArch`. The class

- takes BasicSR's constructor keywords where they apply (``num_in_ch, num_out_ch, num_feat,
  num_block, upscale, act_type``) and ``deploy=False``; every default is the paper's main
  configuration;
- annotates keywords with their valid values (:class:`OneOf`, :class:`Int`, :class:`Float`,
  ``bool``, ``str``), so a bad value is a one-line ``ValueError`` naming the keyword and what is
  valid, raised before the network is built (and before BasicSR starts, by ``rtsr-train``);
- may name configurations (model sizes, challenge entries) in :attr:`SRArch.presets`, chosen by
  the one keyword :attr:`SRArch.preset_key`;
- declares its requirements as data instead of checking them in ``forward``: ``upscale``,
  ``input_multiple``, ``min_input_size``, ``value_range``, ``fp16_safe``, ``tile_exact`` and
  ``receptive_radius``; ``forward`` stays traceable with dynamic height and width;
- reparameterizes only through the block library (:mod:`rtsr_arch.archs.rep`); a network without
  reparameterizable blocks still accepts ``deploy`` and is its own deploy form.

After construction ``net.network_opt`` is the complete ``network_g`` mapping that rebuilds it
(every keyword, defaults included), kept up to date by :meth:`SRArch.reparameterize`.
"""
import functools
import inspect

from torch import nn

from .rep import reparameterize_children

__all__ = ['SRArch', 'OneOf', 'Int', 'Float', 'check_arguments', 'resolve_preset']


class _Check:
    """A declared set of valid values for one constructor keyword."""

    def accepts(self, value):
        raise NotImplementedError

    def expected(self):
        raise NotImplementedError


class OneOf(_Check):
    """One of a fixed set of values (``OneOf(2, 3, 4)``, ``OneOf(*ACTIVATIONS)``)."""

    def __init__(self, *choices):
        self.choices = tuple(choices)

    def accepts(self, value):
        return any(value == c and type(value) is type(c) for c in self.choices)  # True is not 1

    def expected(self):
        return 'one of ' + ', '.join(map(repr, self.choices))

    def __repr__(self):
        return f"OneOf({', '.join(map(repr, self.choices))})"


class Int(_Check):
    """An int (not a bool) within ``[min, max]``; ``optional`` also accepts None."""

    kind = (int,)
    name = 'an int'

    def __init__(self, min=None, max=None, optional=False):
        self.min, self.max, self.optional = min, max, optional

    def accepts(self, value):
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def expected(self):
        bounds = [f'>= {self.min}' if self.min is not None else '', f'<= {self.max}' if self.max is not None else '']
        text = ' '.join([self.name, ' and '.join(b for b in bounds if b)]).strip()
        return text + (' or None' if self.optional else '')

    def __repr__(self):
        args = [f'{k}={v!r}' for k, v in (('min', self.min), ('max', self.max)) if v is not None]
        return f"{type(self).__name__}({', '.join(args + (['optional=True'] if self.optional else []))})"


class Float(Int):
    """A real number (int or float, not a bool) within ``[min, max]``."""

    kind = (int, float)
    name = 'a number'


_PLAIN = {bool: 'a bool', str: 'a str', int: 'an int', float: 'a number'}


def _accepts(annotation, value):
    if isinstance(annotation, _Check):
        return annotation.accepts(value)
    if annotation is int:
        return Int().accepts(value)
    if annotation is float:
        return Float().accepts(value)
    return isinstance(value, annotation)


def _expected(annotation):
    return annotation.expected() if isinstance(annotation, _Check) else _PLAIN[annotation]


@functools.lru_cache(maxsize=None)
def _declared(cls):
    """{keyword: annotation} of the checked keywords of ``cls``'s constructor."""
    params = inspect.signature(cls, eval_str=True).parameters
    return {name: p.annotation for name, p in params.items()
            if isinstance(p.annotation, _Check) or p.annotation in _PLAIN}


def resolve_preset(cls, kwargs):
    """``kwargs`` with the keyword values of the preset they name filled in.

    A preset name that does not exist, or a keyword given with a value that contradicts the
    preset, is a one-line ``ValueError``."""
    key = cls.preset_key
    if key is None or kwargs.get(key) is None:
        return dict(kwargs)
    name = kwargs[key]
    if name not in cls.presets:
        raise ValueError(f"{cls.__name__}: {key}={name!r} is not one of: {', '.join(map(repr, cls.presets))}")
    values = cls.presets[name]
    for k, v in values.items():
        if k in kwargs and kwargs[k] != v:
            raise ValueError(f'{cls.__name__}: {key}={name!r} means {k}={v!r}, but {k}={kwargs[k]!r} was given '
                             f'(give the preset or the keyword, not both)')
    return {**kwargs, **values}


def check_arguments(cls, kwargs):
    """Raise a one-line ``ValueError`` for the first keyword of ``kwargs`` whose value ``cls``
    declares invalid (presets resolved first); return the resolved keywords."""
    kwargs = resolve_preset(cls, kwargs)
    declared = dict(_declared(cls))
    if cls.preset_key is not None:
        declared[cls.preset_key] = OneOf(None, *cls.presets)
    for name, value in kwargs.items():
        if name in declared and not _accepts(declared[name], value):
            raise ValueError(f'{cls.__name__}: {name}={value!r}: expected {_expected(declared[name])}')
    return kwargs


def _checked_init(cls, init):
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f'{cls.__name__}: {exc}') from None
        given = check_arguments(cls, {k: v for k, v in list(bound.arguments.items())[1:]})
        init(self, **given)
        full = signature.bind(self, **given)
        full.apply_defaults()
        self._network_opt = {'type': type(self).__name__, **dict(list(full.arguments.items())[1:])}

    return __init__


class SRArch(nn.Module):
    """Base class of every architecture: declared requirements, checked keywords, presets.

    Class attributes (an instance may override them in ``__init__`` when they depend on its
    configuration):

    - ``input_multiple``: input height and width must be multiples of it (PixelUnshuffle
      factors: RT4KSR 2, CASR 3); inference pads to it and crops the output back.
    - ``min_input_size``: smallest valid input height and width (ESA's pooling needs 15).
    - ``value_range``: the range the network computes in, e.g. ``(0, 255)`` for RFDN; the
      conversion happens inside the network: inputs are RGB in [0, 1], outputs unclamped.
    - ``fp16_safe``: float16 inference is accurate (no overflow, no unstable reduction).
    - ``tile_exact``: no global operation (adaptive pooling, squeeze-excite), so tiled
      inference with an overlap of ``receptive_radius`` equals untiled inference.
    - ``presets`` / ``preset_key``: named configurations and the keyword that selects one.
    - ``paper``, ``code``, ``license``: citation, official repository (and revision), licence.

    Instance attributes set by ``__init__``: ``upscale`` and ``receptive_radius`` (input pixels
    on each side an output pixel depends on; None when not ``tile_exact``).
    """

    input_multiple = 1
    min_input_size = 1
    value_range = (0.0, 1.0)
    fp16_safe = True
    tile_exact = True
    presets = {}
    preset_key = None
    paper = ''
    code = ''
    license = ''

    upscale: int
    receptive_radius: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if '__init__' in cls.__dict__:
            cls.__init__ = _checked_init(cls, cls.__dict__['__init__'])

    @property
    def network_opt(self):
        """The ``network_g`` mapping that rebuilds this network in its current form."""
        return dict(self._network_opt)

    def reparameterize(self):
        """Fuse every reparameterizable block in place (idempotent); returns the network.

        Architectures with a whole-network transform (or an auxiliary training head to drop)
        override this and call ``super().reparameterize()``."""
        reparameterize_children(self)
        if 'deploy' in self._network_opt:
            self._network_opt['deploy'] = True
        self.deploy = True
        return self
