"""transferkit's small error hierarchy: catch `TransferkitError` to catch them all."""

import difflib


class TransferkitError(Exception):
    """Base class of every error transferkit raises on purpose."""


class DataError(TransferkitError, ValueError):
    """Input data that cannot be used: a bad folder, file, CSV row or array."""


class ConfigError(TransferkitError, ValueError):
    """An argument or recipe key with a value that is not allowed."""


class WeightsError(TransferkitError, ValueError):
    """Weights that cannot be found, downloaded or matched to a backbone."""


class TrainableChangedError(TransferkitError, RuntimeError):
    """`trainable` flags changed after `compile()`: Keras would ignore the change."""


class UnsafeModelError(TransferkitError, ValueError):
    """A saved model that needs unsafe deserialization (e.g. a Lambda layer)."""


def suggest(value, allowed, n=3):
    """Return ' Did you mean ...?' for close matches of `value` in `allowed`, or ''."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_choice(argument, value, allowed):
    """Raise ConfigError naming `argument` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(
            f"The `{argument}` argument should be one of {sorted(map(str, allowed))}. "
            f"Received: {argument}={value!r}.{suggest(value, allowed)}"
        )
    return value
