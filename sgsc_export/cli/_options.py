"""Click options made from config fields: each field's metadata (``help``, ``range``) is its option's help
text and bounds, so ``sgsc compress``, ``sgsc validate`` and ``sgsc pipeline`` never restate them.

Not a command: the helper the command modules share. The option's type follows the field's annotation (int,
float, a flag for bool, text for a tuple); ``bounded=True`` turns the field's range into a ``click.IntRange``
/ ``FloatRange`` (a command whose bad values are usage errors today); without it the config's
``__post_init__`` checks the value, with its message naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

__all__ = ["cli_default", "field_option", "fields_of", "option_name"]


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def fields_of(config: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config)}


def cli_default(f: dataclasses.Field) -> Any:
    """The field's default as its option writes it (a tuple as a comma list), so a command whose defaults are
    the config's does not restate them."""
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def kind(f: dataclasses.Field) -> str:
    """int | float | bool | list | str, from the field's annotation (a string under ``from __future__``)."""
    annotation = str(f.type)
    for name in ("bool", "int", "float", "tuple"):
        if annotation.startswith(name):
            return "list" if name == "tuple" else name
    return "str"


def _click_type(f: dataclasses.Field, bounded: bool) -> Any:
    k, bounds = kind(f), f.metadata.get("range")
    if bounded and bounds is not None:
        if k == "int":
            return click.IntRange(int(bounds.lo), int(bounds.hi))
        return click.FloatRange(bounds.lo, bounds.hi, min_open=bounds.lo_open)
    return {"int": int, "float": float}.get(k, str)


def field_option(f: dataclasses.Field, *decls: str, bounded: bool = False, help_suffix: str = "",
                 **kwargs: Any) -> Callable:
    """``click.option`` for field ``f`` (declared as ``--field-name`` unless ``decls`` are given), storing
    into the parameter named like the field; ``kwargs`` go to ``click.option`` (``default``, ``metavar``,
    …)."""
    kwargs.setdefault("help", f.metadata["help"] + help_suffix)
    if kind(f) == "bool" and "type" not in kwargs:
        kwargs.setdefault("is_flag", True)
    else:
        kwargs.setdefault("type", _click_type(f, bounded))
    return click.option(*(decls or (option_name(f.name),)), f.name, **kwargs)
