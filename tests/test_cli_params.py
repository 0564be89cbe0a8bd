"""Every parameter is declared once, on its dataclass field, and the CLI is derived from it.

For each field of `ResponsesRequest`, `DocumentConfig` and `EmulatorConfig`: it is either
a flag of its command or marked not-CLI; with no flags the CLI builds exactly the
library's default object (it forwards nothing, so it has no defaults of its own); and a
flag given reaches its field.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_coroutines import cli
from genai_coroutines.documents import DocumentConfig
from genai_coroutines.emulator import EmulatorConfig
from genai_coroutines.params import (
    CLI,
    HELP,
    cli_fields,
    flag_options,
    given,
    json_object_or_text,
    param,
    spec,
)
from genai_coroutines.responses import ResponsesRequest

MODEL = "gpt-4o-mini"
COMMANDS: dict[type, str] = {
    ResponsesRequest: "responses",
    DocumentConfig: "ocr",
    EmulatorConfig: "emulate",
}
HOW_TO = (
    "declare it once in its dataclass: `name: T = param(default, 'help', flag=...)` "
    "(or `field(default_factory=..., metadata=spec('help'))`) from genai_coroutines.params, "
    "or mark it `cli=False` / `metadata=not_cli('where the value comes from')`"
)


def declaration_problem(cls: type, item: dataclasses.Field[Any]) -> str | None:
    """Why a field fails the "declared once" rule, or None."""
    where = f"{cls.__name__}.{item.name}"
    if not item.metadata.get(HELP):  # declared with `param`, `spec` or `not_cli`
        return f"{where} has no help text and no CLI declaration: {HOW_TO}"
    if item.metadata.get(CLI) is not False and flag_options(cls, item) is None:
        return (
            f"{where}: its annotation {item.type!r} has no command-line form; give its "
            "param(...) a `convert=` (or `type=`), or `cli=False`"
        )
    return None


def _params(cls: type) -> list[Any]:
    return [
        pytest.param(cls, item, id=f"{cls.__name__}.{item.name}")
        for item in dataclasses.fields(cls)
        if item.init
    ]


ALL_FIELDS = [p for cls in COMMANDS for p in _params(cls)]


@pytest.mark.parametrize(("cls", "item"), ALL_FIELDS)
def test_every_field_is_declared(cls: type, item: dataclasses.Field[Any]) -> None:
    problem = declaration_problem(cls, item)
    assert problem is None, problem


def test_an_undeclared_field_is_named_with_the_fix() -> None:
    @dataclasses.dataclass
    class Config:
        known: int = param(1, "a declared parameter")
        hidden: str = dataclasses.field(default="k", metadata=spec("a key", cli=False))
        forgotten: float = 0.5
        shapeless: dict[str, int] | None = param(None, "declared, but argparse cannot take it")

    problems = {item.name: declaration_problem(Config, item) for item in dataclasses.fields(Config)}
    assert problems["known"] is None and problems["hidden"] is None
    assert "Config.forgotten has no help text" in str(problems["forgotten"])
    assert "param(default, 'help'" in str(problems["forgotten"])
    assert "convert=" in str(problems["shapeless"])
    # Undeclared but derivable still works on the command line (the test is what complains).
    assert [flag for _, flag, _ in cli_fields(Config)] == ["--known", "--forgotten"]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DATALAB_API_KEY", "dl-test")


def _argv(cls: type, tmp_path: Path, *flags: str) -> list[str]:
    if cls is ResponsesRequest:
        (tmp_path / "prompts.txt").write_text("a prompt\n")
        return ["responses", str(tmp_path / "prompts.txt"), "--model", MODEL, *flags]
    if cls is DocumentConfig:
        return ["ocr", str(tmp_path / "doc.pdf"), *flags]
    return ["emulate", *flags]


def _build(cls: type, args: argparse.Namespace) -> Any:
    """The object the CLI builds, exactly as the command would."""
    if cls is ResponsesRequest:
        return cli._responses_request(args)
    if cls is DocumentConfig:
        return cli._document_config(args)
    return cli.emulator_config(args)


def _library_default(cls: type) -> Any:
    if cls is ResponsesRequest:
        return ResponsesRequest(
            system_prompt="",
            user_prompts=["a prompt"],
            model=MODEL,
            response_format={"type": "text"},
        )
    return cls()


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize("cls", list(COMMANDS), ids=lambda cls: cls.__name__)
def test_no_flags_build_the_library_defaults(cls: type, tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(_argv(cls, tmp_path))
    required = {item.name for item, _, options in cli_fields(cls) if options.get("required")}
    assert set(given(args, cls)) == required, "the CLI forwards only the flags it was given"
    built, default = _build(cls, args), _library_default(cls)
    for item, flag, _ in cli_fields(cls):
        assert getattr(built, item.name) == getattr(default, item.name), f"{flag} default"


# A valid, non-default value for fields whose generic sample would not do: either
# (flag arguments, expected value) or a function of tmp_path returning them.
Sample = tuple[list[str], Any]
TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
SCHEMA = '{"type": "object", "properties": {"total": {"type": "number"}}}'
SEGMENTS = '{"segments": [{"name": "Invoice", "description": "a bill"}]}'


def _tools(tmp: Path) -> Sample:
    (tmp / "tools.json").write_bytes(orjson.dumps(TOOLS))
    return ["--tools", str(tmp / "tools.json")], TOOLS


def _page_schema(tmp: Path) -> Sample:
    (tmp / "schema.json").write_text(SCHEMA)
    return ["--page-schema", str(tmp / "schema.json")], SCHEMA


def _segmentation_schema(tmp: Path) -> Sample:
    (tmp / "segments.json").write_text(SEGMENTS)
    return ["--segmentation-schema", str(tmp / "segments.json")], SEGMENTS


SAMPLES: dict[str, Sample | Callable[[Path], Sample]] = {
    "ResponsesRequest.model": (["--model", "gpt-4.1"], "gpt-4.1"),
    "ResponsesRequest.max_output_tokens": (["--max-output-tokens", "64"], 64),
    "ResponsesRequest.reasoning_effort": (["--reasoning-effort", "low"], "low"),
    "ResponsesRequest.reasoning_summary": (["--reasoning-summary", "concise"], "concise"),
    "ResponsesRequest.tools": _tools,
    "ResponsesRequest.tool_choice": (["--tool-choice", "required"], "required"),
    "ResponsesRequest.truncation": (["--truncation", "auto"], "auto"),
    "ResponsesRequest.metadata": (["--metadata", '{"run": "nightly"}'], {"run": "nightly"}),
    "ResponsesRequest.service_tier": (["--service-tier", "flex"], "flex"),
    "ResponsesRequest.prompt_cache_retention": (["--prompt-cache-retention", "24h"], "24h"),
    "ResponsesRequest.base_url": (["--base-url", "http://127.0.0.1:9/v1"], "http://127.0.0.1:9/v1"),
    "ResponsesRequest.extra_headers": (["--extra-headers", '{"X-A": "b"}'], {"X-A": "b"}),
    "DocumentConfig.api_url": (["--api-url", "http://127.0.0.1:9/m"], "http://127.0.0.1:9/m"),
    "DocumentConfig.output_format": (["--output-format", "markdown"], "markdown"),
    "DocumentConfig.mode": (["--mode", "fast"], "fast"),
    "DocumentConfig.page_schema": _page_schema,
    "DocumentConfig.segmentation_schema": _segmentation_schema,
    "DocumentConfig.page_range": (["--page-range", "0,2-4"], "0,2-4"),
    "DocumentConfig.extras": (["--extras", '{"force_ocr": true}'], '{"force_ocr": true}'),
    "DocumentConfig.webhook_url": (["--webhook-url", "https://x.test/h"], "https://x.test/h"),
    "DocumentConfig.additional_config": (["--additional-config", '{"a": true}'], '{"a": true}'),
    "EmulatorConfig.fault_rates": (
        ["--fault", "responses:503:0.1", "--fault", "marker_poll:reset:0.2"],
        {"responses": {"503": 0.1}, "marker_poll": {"reset": 0.2}},
    ),
    "EmulatorConfig.fault_error_code": (["--fault-error-code", "invalid_image"], "invalid_image"),
}

COMPANIONS: dict[str, tuple[list[str], set[str]]] = {
    "DocumentConfig.checkpoint_id": (["--schema-id", "sch_1"], {"schema_id"}),
    "DocumentConfig.schema_version": (["--schema-id", "sch_1"], {"schema_id"}),
}
"""Flags a field is only valid with (an /extract from a checkpoint needs a schema), given
alongside its sample and expected among the forwarded ones."""


def _generic_sample(item: dataclasses.Field[Any], flag: str, options: dict[str, Any]) -> Sample:
    """A non-default value from the flag's kind; a field with constraints needs SAMPLES."""
    default = None if item.default is dataclasses.MISSING else item.default
    action, kind = options.get("action"), options.get("type")
    if action == "store_true":
        return [flag], True
    if action is argparse.BooleanOptionalAction:
        return ([f"--no-{flag[2:]}"], False) if default is True else ([flag], True)
    if "choices" in options:
        choice = next(c for c in options["choices"] if c != default)
        return [flag, str(choice)], choice
    if action == "append":
        return [flag, "1", flag, "2"], [kind("1"), kind("2")] if kind else ["1", "2"]
    if kind is int:
        value: Any = default + 1 if isinstance(default, int) else 20
    elif kind is float:
        value = default + 0.5 if isinstance(default, (int, float)) and default else 0.5
    else:
        value = f"{default}-custom" if default else "custom"
    return [flag, str(value)], value


def _flag_params() -> list[Any]:
    return [
        pytest.param(cls, item, flag, options, id=f"{cls.__name__}.{item.name}")
        for cls in COMMANDS
        for item, flag, options in cli_fields(cls)
    ]


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(("cls", "item", "flag", "options"), _flag_params())
def test_each_flag_reaches_its_field(
    cls: type, item: dataclasses.Field[Any], flag: str, options: dict[str, Any], tmp_path: Path
) -> None:
    name = f"{cls.__name__}.{item.name}"
    sample = SAMPLES.get(name) or _generic_sample(item, flag, options)
    flags, expected = sample(tmp_path) if callable(sample) else sample
    assert expected != getattr(_library_default(cls), item.name), (
        "the sample must not be the default"
    )
    companions, companion_names = COMPANIONS.get(name, ([], set()))
    args = cli.build_parser().parse_args(_argv(cls, tmp_path, *companions, *flags))
    try:
        built = _build(cls, args)
    except (ValueError, TypeError) as exc:
        pytest.fail(f"{' '.join(flags)} is refused ({exc}): give {name} a valid one in SAMPLES")
    assert getattr(built, item.name) == expected
    required = {other.name for other, _, kw in cli_fields(cls) if kw.get("required")}
    forwarded = {item.name} | required | companion_names
    assert set(given(args, cls)) == forwarded, "only the given flag is forwarded"


ALIASES = {
    "responses": [
        "--timeout", "--concurrency", "--rpm", "--tpm", "--max-retry-wait", "--max-retries",
        "--retry-delay-min-ms", "--retry-delay-max-ms", "--model", "--base-url", "--stream",
    ],
    "ocr": [
        "--concurrency", "--poll-interval", "--rpm", "--timeout", "--retry-delay",
        "--max-retries", "--max-pages-in-flight", "--jitter-percent",
    ],
    "emulate": ["--datalab-max-pages", "--fault", "--seconds-per-page", "--openai-rpm"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(ALIASES))
def test_the_documented_flag_names_are_kept(command: str) -> None:
    cls = next(cls for cls, name in COMMANDS.items() if name == command)
    flags = {flag for _, flag, _ in cli_fields(cls)}
    assert set(ALIASES[command]) <= flags


def test_the_emulator_has_one_seconds_per_page_default() -> None:
    args = cli.build_parser().parse_args(["emulate"])
    assert cli.emulator_config(args).seconds_per_page == EmulatorConfig().seconds_per_page == 0.02


def test_tool_choice_takes_a_mode_or_a_json_object() -> None:
    assert json_object_or_text("auto") == "auto"
    assert json_object_or_text(' {"type": "function", "name": "f"}') == {
        "type": "function",
        "name": "f",
    }


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metadata", "{not json"], "--metadata: not JSON"),
        (["--tools", "{tmp}/missing.json"], "--tools: cannot read"),
        (["--extra-headers", "[1]"], "--extra-headers: extra_headers must be a mapping"),
        (["--concurrency", "0"], "--concurrency: max_concurrent_requests must be at least 1"),
        (["--timeout", "0"], "--timeout: timeout_secs must be a positive number"),
        (["--metadata", "[1]"], "--metadata: metadata must be a dict"),
        (["--schema", "{tmp}/missing.json"], "--schema: cannot read"),
    ],
)
def test_a_bad_flag_value_exits_2_naming_it(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(ResponsesRequest, tmp_path, *(f.replace("{tmp}", str(tmp_path)) for f in flags))
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
