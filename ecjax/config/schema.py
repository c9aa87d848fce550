"""Hydra structured configs derived from the typed sections: the schema Hydra composes into.

`schema_of(Section)` turns a section's dataclass into the dataclass OmegaConf types a config
node with: same field names, each field's OmegaConf type derived from its annotation and its
check (no second list of settings). `register()` stores the schema of the whole config,
`schema_of(Config)`, in Hydra's ConfigStore as ``ecjax_schema``; `conf/config.yaml` puts it
first in its defaults list, so every group file (and every file of one's own on
``hydra.searchpath``) is merged into its typed node: Hydra itself refuses an unknown key or a
value of the wrong type while composing, and `config_error` words that refusal as the
sections do (``ccmpc.tightening must be one of ['cumulative', 'per_step'], got 'both'.``).
Ranges and cross-field rules stay in the sections (`Section.__post_init__`), each in one place.

How a setting is typed (OmegaConf 2.3 has no unions and no value ranges):

- ``int``, ``float``, ``bool``, ``str`` as annotated, ``Optional`` where null is allowed.
  OmegaConf converts on assignment: ``"3"`` into an int field is 3, an int into a float
  field is a float, ``yes/no/on/off/true/false`` (any case) and 0/1 into a bool field a bool.
- A choice (`Choice`) is an Enum built from the code's own tuple of names (a Literal's
  arguments: `ecjax.scenario.SCENARIOS`, ...), so a new name in the code is allowed, and
  listed in the error, without touching the config. The resolved config holds the names.
- ``int | str`` (``sim.chunk: auto``) cannot be expressed: typed ``Any``, checked by the
  section. Lists are ``List[X]`` (``ccmpc.deltas: List[float]``), mappings
  (``sweep.params``, ``community.params``, ``sweep.jobqueue``) ``Dict[str, Any]``, free values
  (``description``, ``progress``, ``cache_dir``) ``Any``.

Defaults stay in the sections. A required setting's schema value is ``???`` (Hydra's
missing value; `to_dict` reports it as ``sim.S is required``). Every other setting's schema
value is ``${ecjax.unset:}``: resolved, it is the section's default (`Section.default_of`, so
also a default taken from an object, `DefaultOf`); `to_dict` leaves a setting still ``unset``
after composition out of the resolved mapping, so a config composes to exactly the mapping its
YAML and overrides give, and keeps its `config_hash`. ``${ecjax.default:}`` written in a YAML
file resolves to the same default and stays in the mapping.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import types
import typing
from typing import Any, Dict, List, Optional

from ._fields import Choice, ConfigError, Section, join

SCHEMA_NAME = "ecjax_schema"  # the ConfigStore node of the whole config (conf/config.yaml's defaults)
UNSET_RESOLVER = "ecjax.unset"
UNSET = "${" + UNSET_RESOLVER + ":}"


# ----------------------------------------------------------------------------- types
@functools.cache
def choice_enum(options: tuple, name: str = "Choice") -> type[enum.Enum]:
    """An Enum whose member names (and values) are `options`, the code's own tuple."""
    if not all(isinstance(o, str) for o in options):
        raise TypeError(f"choices must be strings to be typed by OmegaConf, got {options!r}")
    return enum.Enum(name, [(o, o) for o in options])


def _omega_type(hint, check):
    """The OmegaConf type of a field annotated `hint` and checked by `check`."""
    if isinstance(check, Choice):
        options = tuple(o for o in check.options if o is not None)
        typ = choice_enum(options)
        return Optional[typ] if check.null else typ
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        typ = _omega_type(rest[0], None) if len(rest) == 1 else Any  # int | str: no union in OmegaConf
        return Optional[typ] if len(rest) < len(args) and typ is not Any else typ
    if hint in (int, float, bool, str):
        return hint
    if hint in (list, tuple) or origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        return List[_omega_type(items[0], None) if items and len(set(items)) == 1 else Any]
    if hint is dict or origin is dict:
        return Dict[str, Any]
    return Any


@functools.cache
def schema_of(cls: type[Section]) -> type:
    """The structured-config dataclass of a section (nested sections: their schemas)."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            sub = schema_of(f.metadata["section"])
            fields.append((f.name, sub, dataclasses.field(default_factory=sub)))
        else:
            default = "???" if f.metadata.get("required") else UNSET
            fields.append((f.name, _omega_type(hints[f.name], f.metadata["check"]),
                           dataclasses.field(default=default)))
    name = cls.__name__.removesuffix("Config") + "Schema"
    return dataclasses.make_dataclass(name, fields, namespace={"__doc__": f"Schema of {cls.__name__}."})


def root_section() -> type[Section]:
    from .cell import Config

    return Config


# -------------------------------------------------------------------------- register
def _unset(*, _node_):
    """The value of ``${ecjax.unset:}``: the section's default of the setting at this key."""
    return root_section().default_of(_node_._get_full_key(None))


def register() -> None:
    """Store the schema in Hydra's ConfigStore and make ``${ecjax.unset:}`` known (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(UNSET_RESOLVER):
        OmegaConf.register_new_resolver(UNSET_RESOLVER, _unset)
    cs = ConfigStore.instance()
    if f"{SCHEMA_NAME}.yaml" not in cs.repo:
        cs.store(name=SCHEMA_NAME, node=schema_of(root_section()))


def schema_node():
    """The schema as stored in the ConfigStore (an OmegaConf DictConfig)."""
    from hydra.core.config_store import ConfigStore

    register()
    return ConfigStore.instance().load(f"{SCHEMA_NAME}.yaml").node


# ------------------------------------------------------------------ keys of the schema
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parts(key: str) -> list:
    """``"ccmpc.deltas[2]"`` -> ``["ccmpc", "deltas", 2]``."""
    return [int(i) if i else n for n, i in _PART.findall(key)]


def locate(key: str, root: type[Section] | None = None):
    """Where a dotted key falls in the schema of `root` (default: the whole config):
    ``(section, field, rest)``, where `field` is the dataclass field of `section` the key names
    (None: the section has no such field) and `rest` the parts below it (list items, mapping
    entries)."""
    sec, ps = root or root_section(), parts(key)
    while ps:
        head, ps = ps[0], ps[1:]
        f = next((f for f in dataclasses.fields(sec) if f.name == head), None)
        if f is None or "section" not in f.metadata or not ps:
            return sec, f, ps
        sec = f.metadata["section"]
    return sec, None, []


def unknown(key: str, where: str = "", root: type[Section] | None = None) -> ConfigError:
    """A `ConfigError` for a key the schema does not have."""
    sec, _, _ = locate(key, root)
    names = [f.name for f in dataclasses.fields(sec)]
    last = str(parts(key)[-1]) if parts(key) else key
    near = difflib.get_close_matches(last, names, n=1)
    hint = f" Did you mean {join(sec.key, near[0])}?" if near else ""
    return ConfigError(f"{key} is not a known setting{where} (known: {', '.join(names)}).{hint}")


def is_known(key: str) -> bool:
    """Whether `key` is a setting of the schema, or lies inside one (a mapping's entry)."""
    _, f, rest = locate(key)
    return f is not None and ("section" not in f.metadata or not rest)


# ------------------------------------------------------------------------ errors
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _find(e: BaseException, kind):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        e = e.__cause__ or e.__context__
    return None


def _type_words(key: str, root: type[Section] | None = None) -> str | None:
    """The allowed type of `key` in the schema's words, where the schema types it."""
    sec, f, rest = locate(key, root)
    if f is None or "section" in f.metadata:
        return None
    typ = _omega_type(typing.get_type_hints(sec)[f.name], f.metadata["check"])
    for _ in rest:
        args = typing.get_args(typ)
        typ = args[-1] if args else Any
    null = typing.get_origin(typ) is typing.Union and type(None) in typing.get_args(typ)
    if null:
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        words = f"one of {[m.name for m in typ]}"
    elif typing.get_origin(typ) is list:
        words = "a list"
    elif typing.get_origin(typ) is dict:
        words = "a mapping"
    else:
        words = _TYPE_WORDS.get(typ)
    return None if words is None else words + (" or null" if null else "")


def value_error(key: str, value, root: type[Section] | None = None) -> ConfigError:
    """A value the schema refuses, worded by the section's check of that setting (or by its
    type, for an item of a list)."""
    sec, f, rest = locate(key, root)
    if f is not None and "section" not in f.metadata and not rest:
        try:
            f.metadata["check"](key, value)
        except ConfigError as e:
            return e
    words = _type_words(key, root)
    return ConfigError(f"{key} must be {words}, got {value!r}." if words else f"{key}: got {value!r}.")


def config_error(e: BaseException, root: type[Section] | None = None) -> ConfigError:
    """A Hydra/OmegaConf error of composing or resolving, as a `ConfigError` that names the
    full key in the sections' words (`root`: the section of the whole config)."""
    from omegaconf.errors import (
        ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError,
    )  # fmt: skip

    text = str(e).strip()
    where = re.match(r"In '([^']+)': ", text)
    at = f" (in {where.group(1)}.yaml)" if where else ""
    oe = _find(e, OmegaConfBaseException)
    key = getattr(oe, "full_key", None) if oe is not None else None
    if not key:
        m = re.search(r"full_key: (\S+)", text)
        key = m.group(1) if m else None
    if key and (isinstance(oe, (ConfigKeyError, ConfigAttributeError))
                or re.search(r"Key '[^']+' not in '", text)):
        return unknown(key, at, root)
    if key and isinstance(oe, MissingMandatoryValue):
        return ConfigError(f"{key} is required (the config leaves it ???){at}.")
    if key and isinstance(oe, ValidationError) and "dereferencing interpolation" not in text:
        got = getattr(oe, "value", None)
        err = value_error(key, got, root)
        return ConfigError(f"{str(err).rstrip('.')}{at}.") if at else err
    if key:
        msg = getattr(oe, "msg", None) or text
        return ConfigError(f"{key}: {msg.strip()}{at}")
    return ConfigError(text)
