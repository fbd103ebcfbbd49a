"""Arguments renamed to Keras's names (`input_shape`, `safe_mode`, `format`), with the old
names still accepted for one release, with a DeprecationWarning.

    @renamed(image_size="input_shape", trusted=("safe_mode", lambda t: not t))
    def build_model(backbone, num_classes=None, *, input_shape=None, safe_mode=True): ...

    build_model("tiny_test", 2, trusted=True)  # warns; runs as safe_mode=False
"""

import functools
import warnings


def renamed(**old):
    """A decorator accepting each keyword `old` name for its new one: {old: new} or
    {old: (new, convert)} where `convert` maps an old value to the new argument's (e.g.
    trusted=True is safe_mode=False). Giving both names raises TypeError."""
    table = {name: new if isinstance(new, tuple) else (new, None)
             for name, new in old.items()}

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for name, (new, convert) in table.items():
                if name not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{function.__qualname__}() got both `{name}` and "
                                    f"`{new}`; `{name}` is the deprecated name of `{new}`.")
                value = kwargs.pop(name)
                kwargs[new] = convert(value) if convert else value
                hint = f"{new}={kwargs[new]!r}" if convert else f"`{new}`"
                warnings.warn(f"The `{name}` argument of {function.__qualname__}() is "
                              f"deprecated and will be removed in the next release; use "
                              f"{hint} instead.", DeprecationWarning, stacklevel=2)
            return function(*args, **kwargs)

        return wrapper

    return decorate


def trusted_to_safe_mode(trusted):
    """`trusted=True` (the old name) is Keras's `safe_mode=False`."""
    return not trusted


# The rename every loader shares: `trusted` -> Keras's `safe_mode` (inverted).
TRUSTED = {"trusted": ("safe_mode", trusted_to_safe_mode)}
