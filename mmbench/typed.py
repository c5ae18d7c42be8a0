"""Typed configuration objects: pydantic dataclasses with field constraints, and one-line errors.

Every config of mmbench (method ``params``, head and balancer params, dataset ``options``, encoder
settings, ``train``) is a frozen :func:`config` dataclass validated by pydantic: unknown keys are an
error, ranges are ``Field`` constraints, and a failed validation becomes one
:class:`~mmbench.errors.ConfigError` line naming the file, the key, what was expected and what was
given. Numbers are strict about kind: an integer field refuses ``true`` and ``1.5``, a float field
refuses ``true`` and text (``1e-3`` in YAML is read as a number by :func:`mmbench.config.load_yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from .errors import ConfigError

T = TypeVar("T")

CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return value


#: An integer that is not a bool, a float or text.
Int = Annotated[int, Strict()]
#: A float that accepts integers but not bools or text.
Float = Annotated[float, BeforeValidator(_number)]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
NonNegFloat = Annotated[float, BeforeValidator(_number), Field(ge=0)]
PosFloat = Annotated[float, BeforeValidator(_number), Field(gt=0)]
Fraction = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
Bool = Annotated[bool, Strict()]


def config(cls: type[T]) -> type[T]:
    """Decorator: a frozen pydantic dataclass that forbids unknown keys (``@config class X: ...``)."""
    return _pydantic_dataclass(frozen=True, config=CONFIG)(cls)  # type: ignore[return-value]


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def field_names(cls: type) -> list[str]:
    """Names of a config dataclass's fields."""
    return [f.name for f in dataclasses.fields(cls)]


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic adds the union member's type name as a loc element ("int", "literal['all']"); drop it
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES))]
    return ".".join(parts)


_TYPE_NAMES = {"int", "float", "str", "bool", "list", "tuple", "dict", "none", "function-before",
               "function-after", "constrained-float", "constrained-int"}


def _message(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "literal_error":
        return "expected " + msg.removeprefix("Input should be ").replace("'", "'")
    if kind.startswith(("greater_than", "less_than")):
        text = msg.removeprefix("Input should be ")
        for words, sym in (("greater than or equal to", ">="), ("less than or equal to", "<="),
                           ("greater than", ">"), ("less than", "<")):
            text = text.replace(words, sym)
        return "must be " + text
    return msg.replace("Input should be", "expected").replace("Input", "value")


def describe(exc: ValidationError, where: str, cls: type | None = None) -> str:
    """One line for a pydantic ``ValidationError`` on the config ``where``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _loc(first["loc"])
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        key = str(first["loc"][-1])
        known = field_names(cls) if cls is not None and dataclasses.is_dataclass(cls) and len(first["loc"]) == 1 \
            else []
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        expected = f"; expected one of: {', '.join(known)}" if known else ""
        parent = ".".join(str(p) for p in first["loc"][:-1])
        return f"{where}{'.' + parent if parent else ''}: unknown key {key!r}{hint}{expected}"
    same = [e for e in errors if _loc(e["loc"]) == loc]
    wanted = " or ".join(dict.fromkeys(_message(e) for e in same))
    value = first.get("input")
    got = "" if first["type"] == "missing" else f", got {value!r}"
    sep = "." if where and not where.endswith(":") else " "
    return f"{where}{sep + loc if loc else ''}: {wanted}{got}"


def validate(cls: type[T], data: Any, where: str) -> T:
    """``cls`` from a plain mapping (or an instance), with one-line :class:`ConfigError` on failure."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if dataclasses.is_dataclass(cls) and not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, where, cls)) from None
    except ConfigError as exc:  # raised by a __post_init__ cross-field check
        raise ConfigError(f"{where}: {exc}") from None


def dump(obj: Any) -> Any:
    """A config (or a nest of them) as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Alias of :func:`validate` (kept for readers of older code)."""
    return validate(cls, data, where)


to_dict: Callable[[Any], Any] = dump
