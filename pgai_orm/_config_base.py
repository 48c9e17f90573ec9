"""Shared machinery of the config classes: one set of field checks, one base class.

pgai generates its config classes and repeats the same checks in each; here every field names its
check once (``field(metadata={"check": ...})``) and :class:`ConfigBase` runs them all, so a rule
such as "a positive integer" lives in exactly one function and every error names its field the
same way (``"ClassName.field: ..."``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import orjson

from pgai_orm.errors import VectorizerError

Check = Callable[[Any], Any]
C = TypeVar("C", bound="ConfigBase")


class ConfigurationError(VectorizerError, ValueError):
    """A config value that cannot work; the message starts with ``ClassName.field:``."""


class _Invalid(VectorizerError):
    """Raised by a check; :class:`ConfigBase` adds the class and field name to the message."""


# --------------------------------------------------------------------------- immutable JSON


class FrozenJSON(dict[str, Any]):
    """A read-only, hashable JSON object.

    Provider options are free-form dicts, but a frozen dataclass must stay hashable (configs are
    compared and used as cache keys) and must not change after validation. Subclassing ``dict``
    keeps it usable wherever a dict is expected (``**options``, orjson, httpx) and keeps ``repr``
    a plain dict literal, so a config's ``repr`` still evaluates.
    """

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("FrozenJSON is read-only")

    __setitem__ = __delitem__ = __ior__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly

    def __hash__(self) -> int:  # type: ignore[override]  # dict sets __hash__ = None
        return hash(orjson.dumps(self, option=orjson.OPT_SORT_KEYS))

    def __repr__(self) -> str:
        return repr(thaw(self))

    def __reduce__(self) -> Any:
        # Rebuild through freeze() so pickle and deepcopy give back nested tuples, not lists.
        return (freeze, (thaw(self),))


def freeze(value: Any) -> Any:
    """Deep-copy JSON data into immutable containers (dict -> FrozenJSON, list -> tuple)."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise _Invalid(f"keys must be strings, got {key!r}")
        return FrozenJSON({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The plain-JSON twin of :func:`freeze`, for ``to_dict`` and ``repr``."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


# --------------------------------------------------------------------------- the field checks
# Each takes the value and returns it, possibly normalised (list -> tuple), or raises _Invalid.


def positive_int(value: Any) -> int:
    """Sizes and counts: an ``int`` (not ``bool``, not ``float``) of at least 1."""
    return int_range(1)(value)


def int_range(low: int, high: int | None = None) -> Check:
    """An ``int`` within ``[low, high]``; ``bool`` is rejected although it is an ``int``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            if high is None:
                raise _Invalid(
                    f"must be a positive integer, got {value!r}" if low == 1
                    else f"must be >= {low}, got {value!r}")
            raise _Invalid(f"must be between {low} and {high}, got {value!r}")
        return value

    return check


def non_empty_str(value: Any) -> str:
    """Names (models, columns, env variables): a string with something in it."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {value!r}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def any_str(value: Any) -> str:
    """Separators may be anything, even empty (LangChain's last resort is ``""``)."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    """Flags: a real ``bool``, so ``"false"`` does not silently mean True."""
    if not isinstance(value, bool):
        raise _Invalid(f"must be True or False, got {value!r}")
    return value


def str_tuple(value: Any) -> tuple[str, ...]:
    """A non-empty list of strings, stored as a tuple so the config stays hashable."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _Invalid(f"must be a list of strings, got {value!r}")
    if not value:
        raise _Invalid("must not be empty")
    for item in value:
        any_str(item)
    return tuple(value)


def json_object(value: Any) -> FrozenJSON:
    """Free-form provider options: a JSON-serializable dict, stored frozen."""
    if not isinstance(value, Mapping):
        raise _Invalid(f"must be a dict, got {value!r}")
    frozen = freeze(value)
    try:
        orjson.dumps(frozen)
    except TypeError as exc:
        raise _Invalid(f"must be JSON-serializable: {exc}") from None
    return frozen


def one_of(*choices: str) -> Check:
    """A value from a closed set (opclasses, model names, input types)."""

    def check(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return str(value)

    return check


def instance_of(*classes: type) -> Check:
    """A nested config object of one of the given classes."""

    def check(value: Any) -> Any:
        if not isinstance(value, classes):
            names = ", ".join(c.__name__ for c in classes)
            raise _Invalid(f"must be one of {names}, got {value!r}")
        return value

    return check


def optional(check: Check) -> Check:
    """``None`` or whatever ``check`` accepts."""
    return lambda value: None if value is None else check(value)


def regexes(value: tuple[str, ...]) -> None:
    """Every separator compiles, so a bad regex fails at migration time, not in a processor."""
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Invalid(f"{pattern!r} is not a valid regular expression: {exc}") from None


def field(check: Check, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its check; the one way fields are declared in this package."""
    return dataclasses.field(default=default, metadata={"check": check})


# --------------------------------------------------------------------------- the base class


class ConfigBase:
    """Validation, dict round trip and an evaluable ``repr`` for every config dataclass.

    Subclasses are ``@dataclass(frozen=True, repr=False)`` and set :attr:`implementation` to
    pgai's name (``None`` where pgai stores none). Cross-field rules go in :meth:`_validate`.
    """

    implementation: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            check = f.metadata.get("check")
            if check is None:
                continue
            try:
                value = check(getattr(self, f.name))
            except _Invalid as exc:
                raise self._error(f.name, str(exc)) from None
            object.__setattr__(self, f.name, value)
        self._validate()

    def _validate(self) -> None:
        """Rules that involve more than one field; fields are already checked one by one."""

    def _error(self, field_name: str, message: str) -> ConfigurationError:
        return ConfigurationError(f"{type(self).__name__}.{field_name}: {message}")

    def _set(self, field_name: str, value: Any) -> None:
        """Store a resolved value (e.g. a model's native dimensions) on the frozen instance."""
        object.__setattr__(self, field_name, value)

    def _default_for(self, field_name: str) -> Any:
        """What ``repr`` may leave out; subclasses that resolve a default at runtime override."""
        f = self.__dataclass_fields__[field_name]  # type: ignore[attr-defined]  # as above
        return f.default

    def _field_values(self) -> Iterable[tuple[str, Any]]:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            yield f.name, getattr(self, f.name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the catalog, with pgai's ``implementation`` name."""
        out: dict[str, Any] = {}
        if self.implementation is not None:
            out["implementation"] = self.implementation
        for name, value in self._field_values():
            out[name] = value.to_dict() if isinstance(value, ConfigBase) else thaw(value)
        return out

    @classmethod
    def _check_keys(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Reject what this class does not know, naming the key, and drop ``implementation``."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{cls.__name__}: expected a dict, got {data!r}")
        kwargs = dict(data)
        if cls.implementation is not None and "implementation" in kwargs:
            found = kwargs.pop("implementation")
            if found != cls.implementation:
                raise ConfigurationError(
                    f"{cls.__name__}.implementation: expected {cls.implementation!r}, "
                    f"got {found!r}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # as above
        for key in kwargs:
            if key not in known:
                raise ConfigurationError(f"{cls.__name__}.{key}: unknown key")
        return kwargs

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output; missing keys take their defaults."""
        return cls(**cls._check_keys(data))

    def __repr__(self) -> str:
        args = ", ".join(
            f"{name}={value!r}" for name, value in self._field_values()
            if value != self._default_for(name)
            or type(value) is not type(self._default_for(name)))
        return f"{type(self).__name__}({args})"
