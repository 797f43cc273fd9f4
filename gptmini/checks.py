"""Checks shared by the configs and the file readers.

``check_field_types`` checks every field of a config dataclass against its annotation, so that a field
added later is checked too; ``read_json`` and ``sha256_of`` name the file in every error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from pathlib import Path

_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _kinds(hint) -> tuple:
    """The types an annotation allows: ``int | None`` -> (int, NoneType); ``Literal``, ... -> (object,)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,) if hint in _KIND_NAMES else (object,)


def _matches(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is type(None):
        return value is None
    return True  # other annotations are checked by the config's own __post_init__


def check_field_types(config) -> None:
    """Raise ValueError naming the first field of a dataclass whose value its annotation does not allow.

    bool fields take only True/False (not "false", not 0), int fields only integers (not 2.5, not
    True), float fields any finite number (not inf or nan), str fields strings; ``X | None`` allows None.
    NumPy scalars are turned into Python numbers so that the config stays JSON-serialisable.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, kinds = getattr(config, f.name), _kinds(hints[f.name])
        if not any(_matches(value, kind) for kind in kinds):
            allowed = " or ".join(_KIND_NAMES.get(k, "None") for k in kinds)
            raise ValueError(
                f"{type(config).__name__}.{f.name} must be {allowed}, got {value!r} ({type(value).__name__})"
            )
        if isinstance(value, numbers.Number) and type(value) not in (bool, int, float):
            setattr(config, f.name, int(value) if int in kinds else float(value))


def read_json(path: str | Path, what: str) -> dict:
    """The JSON object in ``path``; errors name the file and say it should hold ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected {what}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, expected an object: {what}")
    return data


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
