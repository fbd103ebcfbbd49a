"""Schemas for the JSON transferkit reads back: a tiny declarative checker.

    RUN = Obj({"run_id": Str(), "created": Num(min=0), "resumes": List(Obj({...}))},
              required=("run_id",))
    info = check(read_json(path), RUN, f"run file {path}")

Every record, sidecar and metadata file is checked field by field where it is read, so
a hand-edited or tampered file is refused with one ConfigError naming the file, the
field (`resumes[0].time`), what is allowed and the value received, never used until it
fails somewhere deeper. The types follow JSON: `Str`, `Int` (not a bool), `Num` (int
or float, finite), `Bool`, `Null`, `List`, `Map` (an object of any keys), `Obj` (an
object of known keys: unknown ones are refused with the valid list), `AnyOf`, `Any`.
"""

import math
import operator

from transferkit.core.errors import ConfigError, suggest


class Schema:
    """A JSON value's shape. `problem(value)` returns (field, expected, value) of the
    first thing wrong with `value`, or None; `expected` reads "a string", "an int >= 1"."""

    expected = "a value"

    def problem(self, value, field=""):
        return None if self.accepts(value) else (field, self.expected, value)

    def accepts(self, value):
        return True


class Any(Schema):
    """Anything JSON holds."""


class Null(Schema):
    expected = "null"

    def accepts(self, value):
        return value is None


class Bool(Schema):
    expected = "true or false"

    def accepts(self, value):
        return isinstance(value, bool)


class Str(Schema):
    """A string; choices: the allowed values; nonempty: refuse ""."""

    def __init__(self, choices=None, nonempty=False):
        self.choices, self.nonempty = (tuple(choices) if choices is not None else None,
                                       nonempty)
        self.expected = (f"one of {list(self.choices)}" if self.choices is not None
                         else "a non-empty string" if nonempty else "a string")

    def accepts(self, value):
        return isinstance(value, str) and (self.choices is None or value in self.choices) \
            and not (self.nonempty and not value)


class Num(Schema):
    """A finite number (an int or a float, not a bool) within the bounds given: min/max
    inclusive, above/below exclusive."""

    kind = "a number"

    def __init__(self, min=None, max=None, above=None, below=None):
        self.bounds = [(op, bound) for op, bound in ((">=", min), ("<=", max), (">", above),
                                                     ("<", below)) if bound is not None]
        self.expected = self.kind + " and".join(f" {op} {bound}" for op, bound in self.bounds)

    def accepts(self, value):
        if not self._type_ok(value):
            return False
        return all(_OPS[op](value, bound) for op, bound in self.bounds)

    def _type_ok(self, value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


class Int(Num):
    """An integer (not a bool) within the bounds given."""

    kind = "an int"

    def _type_ok(self, value):
        return isinstance(value, int) and not isinstance(value, bool)


class List(Schema):
    """A list of `item`s; length between min_len and max_len; unique: no repeats."""

    def __init__(self, item=Any(), min_len=0, max_len=None, unique=False):
        self.item, self.min_len, self.max_len, self.unique = item, min_len, max_len, unique
        size = (f" of {min_len} to {max_len}" if max_len is not None and min_len
                else f" of at most {max_len}" if max_len is not None
                else f" of at least {min_len}" if min_len else "")
        self.expected = f"a list{size}{' distinct' if unique else ''} items"

    def problem(self, value, field=""):
        if not isinstance(value, list) or len(value) < self.min_len or (
                self.max_len is not None and len(value) > self.max_len):
            return field, self.expected, value
        for i, item in enumerate(value):
            found = self.item.problem(item, f"{field}[{i}]")
            if found:
                return found
        if self.unique:
            seen = set()
            for i, item in enumerate(value):
                key = repr(item)
                if key in seen:
                    return f"{field}[{i}]", "a value not already in the list", item
                seen.add(key)
        return None


class Map(Schema):
    """An object of any (string) keys whose values are `value`s."""

    def __init__(self, value=Any()):
        self.value = value
        self.expected = "an object"

    def problem(self, value, field=""):
        if not isinstance(value, dict):
            return field, self.expected, value
        for key, item in value.items():
            found = self.value.problem(item, _join(field, key))
            if found:
                return found
        return None


class Obj(Schema):
    """An object of the keys in `fields` ({key: Schema}); `required` keys must be there;
    other keys are refused unless `extra` (default False)."""

    def __init__(self, fields, required=(), extra=False):
        self.fields, self.required, self.extra = dict(fields), tuple(required), extra
        self.expected = "an object"

    def problem(self, value, field=""):
        if not isinstance(value, dict):
            return field, self.expected, value
        for key in self.required:
            if key not in value:
                return _join(field, key), MISSING, None
        for key, item in value.items():
            schema = self.fields.get(key)
            if schema is None:
                if self.extra:
                    continue
                valid = sorted(self.fields)
                return (_join(field, key), f"one of the known keys {valid} (an unknown "
                        f"key){suggest(key, valid)}", item)
            found = schema.problem(item, _join(field, key))
            if found:
                return found
        return None


class AnyOf(Schema):
    """A value any one of `schemas` accepts."""

    def __init__(self, *schemas):
        self.schemas = schemas
        self.expected = " or ".join(s.expected for s in schemas)

    def problem(self, value, field=""):
        found = [s.problem(value, field) for s in self.schemas]
        if all(found):
            # The deepest problem says the most (a list of the right type, one bad item).
            deepest = max(found, key=lambda f: len(f[0]))
            return deepest if deepest[0] != field else (field, self.expected, value)
        return None


def Nullable(schema):  # noqa: N802 - reads as a type, like the classes
    """`schema` or null."""
    return AnyOf(schema, Null())


MISSING = "present"  # what a required key's problem expects


def check(value, schema, what):
    """`value` if `schema` accepts it; else ConfigError naming `what` (the file, e.g.
    "run file runs/x/run.json"), the field, what is allowed and what was received."""
    found = schema.problem(value)
    if found is None:
        return value
    field, expected, received = found
    if expected is MISSING:
        raise ConfigError(f"The {what} is not valid: the required field `{field}` is "
                          "missing.")
    shown = repr(received)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    where = f"field `{field}`" if field else "its content"
    raise ConfigError(f"The {what} is not valid: {where} should be {expected}. "
                      f"Received: {shown}")


def _join(field, key):
    return f"{field}.{key}" if field else str(key)
