"""Each parameter declared once, on its dataclass field; the command line is derived from it.

A parameter of `ResponsesRequest`, `DocumentConfig` or `EmulatorConfig` is one line:

    timeout_secs: float = param(60, "per attempt, connect to last byte, s", flag="--timeout")

Its name, type and default are the field's; `help` (and any CLI detail) lives in the
field's metadata. The `responses`, `ocr` and `emulate` commands build their flags from
`dataclasses.fields()` with `add_flags`: the flag is `--field-name` (or `flag=`, where
the CLI keeps an established shorter name), its type comes from the annotation, and its
argparse default is `SUPPRESS`, so `given` forwards only the flags a user typed and the
library's default is the only default. A new field declared with `param` needs no CLI
edit.

How the annotation maps to a flag (after dropping `None` from a union):
`str`/`int`/`float` take one value; `bool` defaulting to False is a `store_true` flag,
otherwise `--name/--no-name`; `list[str]` (or of int/float) is repeatable; `Literal[...]`
gives choices. Anything else needs a `convert=` (called on the parsed value when the
object is built: read a JSON file, parse a JSON object...) or `cli=False`.

Fields that cannot come from the command line (prompts, keys, ...) say so with
`cli=False` / `not_cli(...)`; `tests/test_cli_params.py` fails for a field that has no
declaration at all, so none is forgotten.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import orjson

from .engine.stages import MAX_WAITING

T = TypeVar("T")

HELP, FLAG, CLI, TYPE, ACTION, CONVERT, METAVAR = (
    "help", "flag", "cli", "type", "action", "convert", "metavar"
)  # fmt: skip
"""The metadata keys a field may carry (written by `spec`, read by `add_flags`)."""


def spec(
    help: str,
    *,
    flag: str | None = None,
    cli: bool = True,
    type: Callable[[str], Any] | None = None,
    action: str | None = None,
    convert: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
) -> dict[str, Any]:
    """A field's metadata: `field(default_factory=dict, metadata=spec("..."))`.

    `flag`: the CLI name when it is not `--field-name`. `cli=False`: never a flag
    (`help` then says where the value comes from). `type`: argparse's per-value
    conversion (a `ValueError` becomes a usage error naming the flag). `action`:
    e.g. "append" for a repeatable flag. `convert`: applied to the parsed value when
    the object is built (a `ValueError` or `OSError` becomes a usage error).
    """
    meta: dict[str, Any] = {HELP: help, CLI: cli}
    for key, value in ((FLAG, flag), (TYPE, type), (ACTION, action), (CONVERT, convert)):
        if value is not None:
            meta[key] = value
    if metavar is not None:
        meta[METAVAR] = metavar
    return meta


def not_cli(why: str) -> dict[str, Any]:
    """Metadata of a field with no flag; `why` says where its value comes from instead."""
    return spec(why, cli=False)


def param(
    default: T,
    help: str,
    *,
    flag: str | None = None,
    cli: bool = True,
    type: Callable[[str], Any] | None = None,
    action: str | None = None,
    convert: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
    repr: bool = True,
) -> T:
    """A field with a default, declared once: `name: float = param(60, "help", flag=...)`.

    A required field (no default) is `field(metadata=spec("help"))`, and becomes a
    required flag; a mutable default is `field(default_factory=..., metadata=spec(...))`.
    """
    metadata = spec(
        help, flag=flag, cli=cli, type=type, action=action, convert=convert, metavar=metavar
    )
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


def max_waiting_param() -> int:
    """`max_waiting` of every config whose items wait on the provider (background responses,
    Datalab jobs): declared here once, for `ResponsesRequest` and `DocumentConfig` alike."""
    return param(
        MAX_WAITING,
        "items polled without a concurrency slot at most (0: a poll keeps its slot); "
        "memory holds concurrency + max_waiting items",
    )


def max_wait_param(default: float | None, what: str, *, flag: str | None = None) -> float | None:
    """`max_wait_secs` of every path whose work the provider runs and this library polls
    (background responses, Batch API batches): declared here once, each with its default.
    When reached, the item ends `poll_timeout` with its work's id journaled, not final,
    so a rerun with the journal polls it again instead of paying for it twice."""
    return param(
        default,
        f"{what}: seconds polled at most before the item ends poll_timeout, its id kept for a "
        "rerun (None: no limit)",
        flag=flag,
    )


# Converters for `convert=`: raise ValueError (or OSError) and the CLI names the flag.


def read_text(path: str) -> str:
    """The contents of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def json_text(text: str) -> Any:
    """The JSON value `text` holds."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def json_file(path: str) -> Any:
    """The JSON value a file holds."""
    text = read_text(path)
    try:
        return json_text(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def json_object_or_text(text: str) -> Any:
    """A JSON object when `text` starts with `{`, else `text` as given (e.g. a mode name)."""
    return json_text(text) if text.lstrip().startswith("{") else text


DEADLINE_HELP = (
    "finish by then: seconds (90), minutes (30m), hours (6h), days (1d) from now, or an "
    "ISO 8601 time with its offset (2026-03-02T09:00:00+01:00, or Z); nothing is sent "
    "after it and the rest end deadline_exceeded (--resume sends them); with --batch-api "
    "the batches give way to the synchronous path in time for it"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def deadline_text(text: str) -> float | datetime:
    """`--deadline` as typed: seconds from now (with an s, m, h or d unit) or an ISO 8601
    time with an offset; what `deadline=` takes (checked there: above 0, not past)."""
    text = text.strip()
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        seconds = float(duration[1]) * _UNIT_SECONDS[duration[2]]
        if seconds <= 0:
            raise ValueError(f"{text!r} is no time from now: give more than 0")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90, 30m, 6h, 1d) nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add +01:00, or Z for UTC)")
    return when


def add_deadline(parser: argparse.ArgumentParser) -> None:
    """The `--deadline` flag of a command whose batch takes `deadline=`."""
    parser.add_argument(
        "--deadline", type=_argparse_type(deadline_text), metavar="WHEN", help=DEADLINE_HELP
    )


# Deriving the command line.


def flag_of(item: dataclasses.Field[Any]) -> str:
    flag: str = item.metadata.get(FLAG) or "--" + item.name.replace("_", "-")
    return flag


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _hint(cls: type, item: dataclasses.Field[Any]) -> Any:
    """The field's annotation, evaluated; None when it cannot be (a name only imported
    for type checking, say): such a field needs `type=`/`convert=` or `cli=False`."""
    if not isinstance(item.type, str):
        return item.type
    try:
        return eval(item.type, vars(sys.modules[cls.__module__]))  # annotations are code
    except Exception:
        return None


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return hint


METAVARS: dict[Any, str] = {int: "N", float: "NUM", str: "TEXT"}


def _has_default(item: dataclasses.Field[Any]) -> bool:
    return not (item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING)


def _argparse_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`convert` for argparse, its ValueError message kept (argparse would replace it)."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _help(item: dataclasses.Field[Any], store_true: bool) -> str:
    text = str(item.metadata.get(HELP, "")).replace("%", "%%")
    if item.default is not dataclasses.MISSING and item.default is not None and not store_true:
        text += f" (default: {item.default})".replace("%", "%%")
    return text


def flag_options(cls: type, item: dataclasses.Field[Any]) -> dict[str, Any] | None:
    """The `add_argument` keywords of a field, or None when it is no flag."""
    meta = item.metadata
    if not item.init or meta.get(CLI) is False:
        return None
    options: dict[str, Any] = {"dest": _dest(flag_of(item)), "default": argparse.SUPPRESS}
    if METAVAR in meta:
        options["metavar"] = meta[METAVAR]
    hint = _without_none(_hint(cls, item))
    store_true = False
    if TYPE in meta or CONVERT in meta or ACTION in meta:
        options["type"] = _argparse_type(meta[TYPE]) if TYPE in meta else str
        if ACTION in meta:
            options["action"] = meta[ACTION]
    elif hint is bool:
        store_true = item.default is False
        options["action"] = "store_true" if store_true else argparse.BooleanOptionalAction
    elif hint in (str, int, float):
        options["type"] = hint
    elif typing.get_origin(hint) is list and typing.get_args(hint)[0] in (str, int, float):
        options["type"], options["action"] = typing.get_args(hint)[0], "append"
    elif typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        options["type"], options["choices"] = type(choices[0]), choices
    else:
        return None  # no command-line form: the test names the field
    if "metavar" not in options and "choices" not in options and "type" in options:
        options["metavar"] = METAVARS.get(options["type"], "VALUE")
    if not _has_default(item):
        options["required"] = True
        del options["default"]
    options["help"] = _help(item, store_true)
    return options


def cli_fields(cls: type) -> Iterator[tuple[dataclasses.Field[Any], str, dict[str, Any]]]:
    """(field, flag, add_argument keywords) of every field that is a flag, in field order."""
    for item in dataclasses.fields(cls):
        options = flag_options(cls, item)
        if options is not None:
            yield item, flag_of(item), options


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One flag per field of `cls` that has a command-line form."""
    group = parser.add_argument_group(title or f"{cls.__name__} parameters")
    for _, flag, options in cli_fields(cls):
        group.add_argument(flag, **options)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` whose flags were given, converted: keywords for `cls(...)`."""
    values: Mapping[str, Any] = vars(args)
    chosen: dict[str, Any] = {}
    for item, flag, options in cli_fields(cls):
        if options["dest"] not in values:
            continue
        value = values[options["dest"]]
        convert = item.metadata.get(CONVERT)
        if convert is not None:
            try:
                value = convert(value)
            except (ValueError, OSError) as exc:
                raise ValueError(f"{flag}: {exc}") from None
        chosen[item.name] = value
    return chosen


@contextmanager
def flags_named(cls: type, renamed: Mapping[str, str | None] | None = None) -> Iterator[None]:
    """Around building `cls` from flags: a TypeError or ValueError whose message starts with
    one of its fields' names is raised again led by that field's flag, what the user typed
    (`--concurrency: max_concurrent_requests must be at least 1, got 0`). `renamed` maps a
    field's flag to the one a command uses instead (None: it has none)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        message = str(exc)
        for item, flag, _ in cli_fields(cls):
            typed = renamed.get(flag, flag) if renamed is not None else flag
            if (
                typed
                and type(exc) in (TypeError, ValueError)
                and re.match(rf"{item.name}\b", message)
            ):
                raise type(exc)(f"{typed}: {message}") from None
        raise
