"""Command-line options derived from the `TrainConfig` fields (name, type, help), in the manner of
transformers' HfArgumentParser: a new training setting gets its `harness train` flag and help text
from its field, with nothing written twice.

Every derived option defaults to None, meaning "not given": the `--config` file's value, else the
field's default, applies. The help shows the field's default, which is what an unset flag gets when
the file does not set it.
"""

from __future__ import annotations

import inspect
from dataclasses import Field, fields
from typing import Any, Callable, Optional

import typer
from rich.markup import escape

from .train.config import TrainConfig

# Spellings users rely on; any other bool field is `--name/--no-name`.
BOOL_FLAGS = {"lora": ("--lora", "--full"), "bf16": ("--bf16", "--fp32"), "merge": ("--merge", "--no-merge")}
# What the flag adds to the field's help (a value the flag cannot spell, or how to spell it).
CLI_NOTES = {
    "lora_targets": "Comma-separated.",
    "bf16": "'auto' has no flag: give neither (or write it in --config).",
}
PANEL = "Training settings (TrainConfig; a flag overrides --config)"


def cli_type(f: Field) -> type:
    """The type click parses a field's flag as. The annotation is read as text (the dataclass module
    uses postponed annotations); a type with no flag form fails here, at import, naming the field."""
    kinds = {k.strip() for k in str(f.type).split("|")} - {"None"}
    if "bool" in kinds:  # bool, or bf16's `bool | str` whose string form ('auto') is --config only
        return bool
    if len(kinds) == 1:
        (kind,) = kinds
        if kind in ("int", "float", "str"):
            return {"int": int, "float": float, "str": str}[kind]
        if kind.startswith("tuple[str"):
            return str  # comma-separated
    raise TypeError(f"TrainConfig.{f.name}: no command-line form for type {f.type}")


def flag_names(f: Field) -> tuple[str, ...]:
    """`--field-name`, or the on/off pair for a bool field."""
    if cli_type(f) is bool:
        on, off = BOOL_FLAGS.get(f.name, (f"--{f.name.replace('_', '-')}", f"--no-{f.name.replace('_', '-')}"))
        return (f"{on}/{off}",)
    return (f"--{f.name.replace('_', '-')}",)


def _default_text(f: Field) -> str:
    """The field's default as the flag would spell it; empty for None (the help says what unset means)."""
    d = f.default
    if d is None:
        return ""
    if isinstance(d, bool):
        d = flag_names(f)[0].split("/")[0 if d else 1]
    elif isinstance(d, tuple):
        d = ",".join(d)
    return f"[default: {d}]"


def help_text(f: Field) -> str:
    """The field's help, the flag's note and the field's default, as plain text."""
    return " ".join(x for x in (f.metadata.get("help", ""), CLI_NOTES.get(f.name, ""), _default_text(f)) if x)


def _option(f: Field) -> Any:
    # the real default stays None ("not given"), so typer's own default display is off
    return typer.Option(None, *flag_names(f), help=escape(help_text(f)), show_default=False, rich_help_panel=PANEL)


def to_config_value(f: Field, value: Any) -> Any:
    """A parsed flag value as the TrainConfig field takes it (a comma list becomes a tuple)."""
    if str(f.type).startswith("tuple[str"):
        return tuple(s.strip() for s in value.split(","))
    return value


def train_config_options(exempt: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """Decorate a typer command with one option per TrainConfig field not in `exempt`.

    The command declares its own options as usual plus a `train_flags` parameter; typer sees a
    signature with the field options appended (via `__signature__`), and the command receives
    `train_flags`: the fields whose flag was given, as TrainConfig values."""
    derived = [f for f in fields(TrainConfig) if f.name not in exempt]

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "train_flags"]
        if len(own) == len(sig.parameters):
            raise TypeError(f"{func.__name__}: a command with TrainConfig options takes `train_flags`")
        clash = sorted({p.name for p in own} & {f.name for f in derived})
        if clash:
            raise TypeError(f"{func.__name__}: option '{clash[0]}' is also a TrainConfig field; exempt it")
        extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f),
                                   annotation=Optional[cli_type(f)]) for f in derived]

        def command(**kw):
            given = [(f, kw.pop(f.name)) for f in derived]
            flags = {f.name: to_config_value(f, v) for f, v in given if v is not None}
            return func(**kw, train_flags=flags)

        command.__signature__ = sig.replace(parameters=own + extra)
        command.__name__, command.__qualname__ = func.__name__, func.__qualname__
        command.__doc__, command.__module__ = func.__doc__, func.__module__
        return command

    return decorate
