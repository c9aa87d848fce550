"""Typed config sections: every setting declares its type and allowed range once, as field
metadata of the dataclass of its group, and a section checks them when it is built.

`Section.parse` builds a section from the resolved mapping of its group: unknown and missing
keys are refused first, then `__post_init__` checks each field and the section's own rules
across fields (`Section.check`). Errors name the setting by its config key and give the allowed
range, e.g. ``ccmpc.deltas[2] must be in (0, 0.5], got 0.7.``

A setting whose object already defines its default (the solver's tolerances are fields of
`ecjax.qp.IPM`) takes it from there (`DefaultOf`) instead of writing it again; `conf/` asks
for such a default with ``${ecjax.default:}`` (`Section.default_of`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import re
from collections.abc import Mapping
from typing import ClassVar, NoReturn

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY_LIKE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of its allowed range."""


def fail(key: str, allowed: str, got) -> NoReturn:
    raise ConfigError(f"{key} must be {allowed}, got {got!r}.")


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


# ---------------------------------------------------------------------- setting kinds
@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in [lo, hi]; also null where `null`, and the string `word` where given."""

    lo: int | None = None
    hi: int | None = None
    null: bool = False
    word: str | None = None

    def __call__(self, key: str, v) -> None:
        if (v is None and self.null) or (self.word is not None and v == self.word):
            return
        lo, hi = self.lo, self.hi
        if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f" [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
            alt = (" or null" if self.null else "") + (f" or {self.word!r}" if self.word else "")
            fail(key, f"an integer{rng}{alt}", v)


@dataclasses.dataclass(frozen=True)
class Num:
    """A finite number in the interval lo..hi (open at either end where asked); also null."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False

    def __call__(self, key: str, v) -> None:
        if v is None and self.null:
            return
        ok = is_num(v)
        if ok and self.lo is not None:
            ok = v > self.lo if self.lo_open else v >= self.lo
        if ok and self.hi is not None:
            ok = v < self.hi if self.hi_open else v <= self.hi
        if not ok:
            rng = "a finite number" if self.lo is None and self.hi is None else f"in {self.interval()}"
            fail(key, rng + (" or null" if self.null else ""), v)

    def interval(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `options` (a tuple the code defines); also null where `null`."""

    options: tuple
    null: bool = False
    why: str = ""  # said after the options when the value is refused

    def __call__(self, key: str, v) -> None:
        if not ((v is None and self.null) or v in self.options):
            fail(key, f"one of {list(self.options)}" + (" or null" if self.null else "") + self.why, v)


@dataclasses.dataclass(frozen=True)
class Flag:
    """true or false; also null where `null`."""

    null: bool = False

    def __call__(self, key: str, v) -> None:
        if not ((v is None and self.null) or isinstance(v, bool)):
            fail(key, "true or false" + (" or null" if self.null else ""), v)


@dataclasses.dataclass(frozen=True)
class Text:
    """A non-empty string; also null where `null`."""

    null: bool = False

    def __call__(self, key: str, v) -> None:
        if not ((v is None and self.null) or (isinstance(v, str) and v)):
            fail(key, "a non-empty string" + (" or null" if self.null else ""), v)


@dataclasses.dataclass(frozen=True)
class EnvName:
    """The name of an environment variable (or null); never a key itself."""

    def __call__(self, key: str, v) -> None:
        if v is not None and not (isinstance(v, str) and ENV_NAME.match(v)):
            fail(key, "the NAME of an environment variable (letters, digits, _), never a key itself",
                 "<hidden>" if isinstance(v, str) and KEY_LIKE.match(v) else v)


@dataclasses.dataclass(frozen=True)
class Table:
    """A mapping; its entries are checked by the section."""

    def __call__(self, key: str, v) -> None:
        if not isinstance(v, Mapping):
            fail(key, "a mapping", v)


@dataclasses.dataclass(frozen=True)
class Free:
    """Any value; a list, say, checked by the section."""

    def __call__(self, key: str, v) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class DefaultOf:
    """A default taken from the field of the same name of another class, `source` given as
    ``"module:Class"``. The class is imported only when a default is needed, so reading a
    config imports no numerical code."""

    source: str

    def value(self, name: str):
        module, _, qualname = self.source.partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
        if f is not None and f.default is not dataclasses.MISSING:
            return f.default
        if f is not None and f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        raise TypeError(f"{self.source} has no field {name!r} with a default.")


def setting(default, check, *, required: bool = False):
    """A dataclass field whose value `check(key, value)` accepts (`required`: no default).

    `default` may be a `DefaultOf`: the same-named field's default of that class, filled in
    when the section is built.
    """
    meta = {"check": check, "required": required}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def subsection(cls: type[Section], *, required: bool = False):
    """A dataclass field holding a nested `Section` (default: the section's defaults)."""
    return dataclasses.field(default=None, metadata={"section": cls, "required": required})


def join(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


# -------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class Section:
    """A config group. `key` is its config path ('' for the whole config)."""

    key: ClassVar[str] = ""

    @classmethod
    def known(cls, raw: Mapping) -> tuple[tuple[str, ...], str]:
        """The keys this mapping may hold, and words said after 'not a known setting'."""
        return tuple(f.name for f in dataclasses.fields(cls)), ""

    @classmethod
    def parse(cls, raw) -> Section:
        """The section of a resolved mapping (None: every default)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            fail(cls.key or "config", "a mapping", raw)
        names, where = cls.known(raw)
        for k in raw:
            if k not in names:
                raise ConfigError(f"{join(cls.key, k)} is not a known setting{where} "
                                  f"(known: {', '.join(names)}).")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.metadata.get("required") and f.name not in raw:
                raise ConfigError(f"{join(cls.key, f.name)} is required.")
            if "section" in f.metadata:
                kw[f.name] = f.metadata["section"].parse(raw.get(f.name))
            elif f.name in raw:
                kw[f.name] = raw[f.name]
        return cls(**kw)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if "section" in f.metadata:
                if getattr(self, f.name) is None:
                    object.__setattr__(self, f.name, f.metadata["section"].parse(None))
                continue
            if isinstance(getattr(self, f.name), DefaultOf):
                object.__setattr__(self, f.name, getattr(self, f.name).value(f.name))
            f.metadata["check"](join(self.key, f.name), getattr(self, f.name))
        self.check()

    @classmethod
    def default_of(cls, path: str):
        """The default of the setting at the dotted `path` below this section."""
        head, _, rest = path.partition(".")
        f = next((f for f in dataclasses.fields(cls) if f.name == head), None)
        if f is None or ("section" in f.metadata) != bool(rest):
            raise ConfigError(f"{join(cls.key, path)} is not a setting with a default.")
        if "section" in f.metadata:
            return f.metadata["section"].default_of(rest)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default.value(f.name) if isinstance(f.default, DefaultOf) else f.default

    def check(self) -> None:
        """Rules across this section's fields (each field's own range is already checked)."""


def object_error(e: Exception) -> ConfigError:
    """A `ConfigError` of an object's own check (its messages quote the config key in ``)."""
    return ConfigError(str(e).replace("`", ""))
