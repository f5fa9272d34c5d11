"""One validation mechanism for every file a user writes: suites, prior suites, gate files and
training settings (`harness train --config`, a suite's `train:` blocks).

Each file's schema is a pydantic model built on `Strict`, and every failure becomes one
`ConfigError` line through `config_error`:

    FILE: key.path: message

naming the file, the key path as the user wrote it (`arms.sdft.train.lr`, `stages[1].test.limit`)
and the problem; an unknown key lists the keys allowed where it was written. One formatter keeps
the wording the same in every file, and a typo fails before anything runs instead of silently
taking a default.

`typed` gives the strict scalar checks shared by these files: YAML hands over untyped values, and
pydantic's lax mode would turn `true` into 1 or `"5"` into 5 without a word. The checks never
convert a value (an integer written for a number stays an integer), because the training key
hashes the settings exactly as written.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from .errors import ConfigError


class Strict(BaseModel):
    """Base of every user-file schema: a key the model does not declare is an error."""

    model_config = ConfigDict(extra="forbid")
    #: What an undeclared key is called in the error (TrainConfig's say "unknown training setting").
    unknown_key: ClassVar[str] = "unknown key"


class Section(Strict):
    """A block of settings inside a file (a prior benchmark's settings, a gate's defaults): an empty
    entry (`arc_challenge:`) means every default, anything else must be a mapping."""

    #: What the error calls the expected mapping.
    mapping_of: ClassVar[str] = "a mapping"

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        if not v:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"expected {cls.mapping_of}, got {v!r}")
        return v


# ----- strict scalar types ------------------------------------------------------------------------
# kind -> (the words naming it in an error, the test a value of that kind passes)
_KINDS = {
    "int": (("an integer",), lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": (("a number",), lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "str": (("a string",), lambda v: isinstance(v, str)),
    "bool": (("true", "false"), lambda v: isinstance(v, bool)),
    "str-list": (("a list of strings",),
                 lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "none": (("null",), lambda v: v is None),
}


def expect(*kinds: str) -> BeforeValidator:
    """A validator accepting a value of any of `kinds` (keys of `_KINDS`) unchanged, else failing
    with `expected an integer or null, got 'x'`. A boolean is never a number (YAML reads `yes`
    as true)."""
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise ValueError(f"unknown value kind {unknown[0]!r}")
    words = [w for k in kinds for w in _KINDS[k][0]]
    want = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"

    def check(v: Any) -> Any:
        if not any(_KINDS[k][1](v) for k in kinds):
            raise ValueError(f"expected {want}, got {v!r}")
        return v

    return BeforeValidator(check)


def typed(*kinds: str) -> Any:
    """The annotation for a setting of one of `kinds`, checked by `expect` and never converted."""
    return Annotated[Any, expect(*kinds)]


# ----- one error line -----------------------------------------------------------------------------
def key_path(loc: Sequence[Any], root: str = "") -> str:
    """(1, 'train', 'limit') under root 'stages' -> 'stages[1].train.limit'. Pydantic marks a
    mapping key's own error with a last '[key]' part: the path is the key's."""
    out = root
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def unknown_key(schema: Any) -> str:
    """The message for a key `schema` (a Strict model) does not declare, with the allowed keys."""
    model = _model_in(schema)
    if model is None:
        return Strict.unknown_key
    return f"{model.unknown_key} (allowed: {', '.join(sorted(model.model_fields))})"


def config_error(e: ValidationError, schema: Any, file: Any = None, root: str = "") -> ConfigError:
    """The first problem of a validation as one line, `FILE: key.path: message`.

    `schema` is the type that was validated (a model, or e.g. `list[StageSpec]`): it says which
    keys were allowed where an unknown one was found. `root` is the key path of the validated
    value inside its file (`stages`, `train`). An unknown key (or a mapping key that fails its
    check, such as an unknown benchmark name) is reported before anything else, since a misspelt
    key is the likeliest cause of the other errors. A model-level check whose error has no key
    path names its keys in the message itself."""
    errs = e.errors()
    err = next((x for x in errs if x["type"] == "extra_forbidden" or x["loc"][-1:] == ("[key]",)), errs[0])
    loc = list(err["loc"])
    if err["type"] == "extra_forbidden":
        msg = unknown_key(_type_at(schema, loc[:-1]))
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(": ".join(str(x) for x in (file, key_path(loc, root), msg) if x))


def _unwrap(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X; a union holding a model -> that model."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                tp = args[0]
            else:
                return models[0] if models else tp
        else:
            return tp


def _model_in(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type_at(tp: Any, loc: Sequence[Any]) -> Any:
    """The declared type of the value at `loc` inside a value of type `tp` (None when unknown)."""
    for part in loc:
        model = _model_in(tp)
        if model is not None:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
            continue
        tp = _unwrap(tp)
        origin, args = get_origin(tp), get_args(tp)
        if isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
            tp = args[1]
        elif isinstance(origin, type) and issubclass(origin, Sequence) and args:
            tp = args[0]
        else:
            return None
    return tp
