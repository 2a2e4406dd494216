"""Corruption: the noise a denoising autoencoder learns to remove, as a registry.

Three kinds, as in Vincent et al. (2010), each with a level ``nu``:

``masking`` (the paper's)
    each input unit is set to 0 with probability ``nu`` (survivors are not rescaled).
``salt-pepper``
    each input unit is set, with probability ``nu``, to 0 or 1, equally likely.
``gaussian``
    ``x + N(0, nu^2)``, clipped to [0, 1] so that the corrupted input stays in the
    cross-entropy's target space; ``nu`` is the standard deviation.

Every kind is a counter-based hash of (seed, epoch, sample, unit): the same sample gets the
same noise in any batch, on any backend and thread count. Each backend implements a kind as
one kernel of the same name and arguments, ``gather_<kind>(X, rows, level, seed, epoch,
out)``, checked against the NumPy reference in the tests. Adding a kind means an entry here
and that kernel in each backend.
"""

import math
from dataclasses import dataclass

from medalpy.errors import ConfigError


@dataclass(frozen=True)
class NoiseType:
    name: str
    kernel: str  # the backends' function
    level: str  # what the level means, for messages and help
    least: float  # the level's range: least <= level < bound
    bound: float


NOISE_TYPES = {
    "masking": NoiseType("masking", "gather_masked", "the probability of setting a unit to 0",
                         0.0, 1.0),
    "salt-pepper": NoiseType("salt-pepper", "gather_salt_pepper",
                             "the probability of setting a unit to 0 or 1", 0.0, 1.0),
    "gaussian": NoiseType("gaussian", "gather_gaussian", "the standard deviation", 0.0,
                          math.inf),
}
DEFAULT = "masking"


def noise_type(name):
    """The :class:`NoiseType` called ``name`` (a ConfigError listing the known ones)."""
    if not isinstance(name, str) or name not in NOISE_TYPES:
        raise ConfigError(f"noise_type must be one of {', '.join(NOISE_TYPES)}, got {name!r}")
    return NOISE_TYPES[name]


def check_level(name, level, option="noise"):
    """Refuse a noise level outside its kind's range, naming the option."""
    kind = noise_type(name)
    ok = (isinstance(level, (int, float)) and not isinstance(level, bool)
          and kind.least <= level < kind.bound)
    if not ok:
        upper = "" if math.isinf(kind.bound) else f" and below {kind.bound:g}"
        raise ConfigError(f"{option} ({name}: {kind.level}) must be a number of at least "
                          f"{kind.least:g}{upper}, got {level!r}")


def corrupter(backend, name):
    """The backend's kernel for noise ``name``: ``f(X, rows, level, seed, epoch, out)``."""
    return getattr(backend, noise_type(name).kernel)
