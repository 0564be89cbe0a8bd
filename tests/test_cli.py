"""`python -m genai_coroutines ...` as a user runs it: real subprocesses, real signals.

The emulator runs in the test's event loop on 127.0.0.1, so a test awaits the CLI
process (never blocks on it) and reads the emulator's counters directly: what crossed
the wire is counted by the server, not inferred from the client's output. A test
waits for an observable condition (lines in the output, rows in the journal) by
polling it with a deadline; the CLI is never paced by sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_coroutines.cli import build_parser, main
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.engine.journal import Journal
from genai_coroutines.engine.records import Records
from tests.samples import FAIL_MARKER, pdf

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"


def _default_sigint() -> None:
    """Undo an inherited SIG_IGN (a shell's background job), so SIGINT reaches Python."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(emulator: Emulator) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OPENAI_API_KEY": emulator.config.openai_api_key,
        "DATALAB_API_KEY": emulator.config.datalab_api_key,
    }


async def start(emulator: Emulator, tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    """The CLI in the background; its stderr goes to `tmp_path/stderr.txt`."""
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "genai_coroutines",
            *args,
            env=cli_env(emulator),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_default_sigint,
        )


async def run(emulator: Emulator, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run the CLI to completion: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "genai_coroutines",
        *args,
        env=cli_env(emulator),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until(
    process: asyncio.subprocess.Process, condition: Callable[[], bool], what: str
) -> None:
    """Poll `condition` while the CLI runs; fail if it ends first or 20 s pass."""
    deadline = asyncio.get_running_loop().time() + 20.0
    while not condition():
        assert process.returncode is None, f"the CLI exited ({process.returncode}) before {what}"
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def output_lines(path: Path) -> list[dict[str, Any]]:
    """Complete JSONL records (a line still being written has no newline yet)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def journal_rows(path: Path) -> list[tuple[int, str | None, dict[str, Any] | None]]:
    """(index, check_url, result) of every item, read without writing (safe mid-batch)."""
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return []
    try:
        rows = db.execute("SELECT idx, check_url, result FROM items ORDER BY idx").fetchall()
        records = Records.of(db)
        return [(idx, url, None if r is None else records.decode(r)) for idx, url, r in rows]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        db.close()


def succeeded_in_journal(path: Path) -> set[int]:
    return {idx for idx, _, result in journal_rows(path) if result and result["success"]}


def write_prompts(path: Path, prompts: list[str]) -> None:
    path.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in prompts))


def prompt_digest(prompt: str) -> str:
    """How the emulator keys a text prompt in `responses_by_digest` (its `input`)."""
    return digest(orjson.dumps(prompt))


def assert_each_index_once(records: list[dict[str, Any]], n: int) -> None:
    indices = sorted(record["index"] for record in records)
    assert indices == list(range(n)), "every item exactly once in the output"


def responses_args(emulator: Emulator, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "responses",
        str(tmp_path / "prompts.jsonl"),
        "--model",
        MODEL,
        "--base-url",
        emulator.openai_base_url,
        "--output",
        str(tmp_path / "out.jsonl"),
        "--journal",
        str(tmp_path / "batch.journal"),
        *extra,
    ]


async def test_kill_9_mid_batch_then_resume_sends_no_finished_prompt_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts = [f"prompt {i}" for i in range(200)]
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    emulator.config.latency = 0.1  # 200 prompts, 10 at a time: about 2 s
    journal, output = tmp_path / "batch.journal", tmp_path / "out.jsonl"
    args = responses_args(emulator, tmp_path, "--concurrency", "10")

    first = await start(emulator, tmp_path, *args)
    await until(first, lambda: len(output_lines(output)) >= 30, "30 results were written")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    finished = succeeded_in_journal(journal)
    assert 30 <= len(finished) < 200
    before = dict(emulator.stats.responses_by_digest)
    for index in finished:  # the journal only holds what the server really answered
        assert emulator.stats.completed_by_digest[prompt_digest(prompts[index])] == 1

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    after = emulator.stats.responses_by_digest
    for index in finished:
        assert after[prompt_digest(prompts[index])] == 1, f"prompt {index} was sent again"
    assert sum(after.values()) - sum(before.values()) == 200 - len(finished)
    records = output_lines(output)
    assert_each_index_once(records, 200)
    assert all(r["success"] for r in records)
    assert {r["index"] for r in records if r.get("from_journal")} == finished
    assert f"{len(finished)} from journal" in err


async def test_kill_9_while_polling_then_resume_uploads_no_document_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.seconds_per_page = 0.15  # documents of 1..8 pages: ready after 0.15..1.2 s
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(8):
        (folder / f"doc{i}.pdf").write_bytes(pdf(i + 1, tag=f"doc {i}"))
    journal, output = tmp_path / "batch.journal", tmp_path / "out.jsonl"
    args = [
        "ocr",
        str(folder / "*.pdf"),
        "--api-url",
        emulator.marker_url,
        "--output",
        str(output),
        "--journal",
        str(journal),
        "--concurrency",
        "8",
        "--poll-interval",
        "0.05",
    ]

    def polling() -> bool:
        rows = journal_rows(journal)
        done = sum(1 for _, _, result in rows if result is not None)
        return len(rows) == 8 and all(url for _, url, _ in rows) and 1 <= done < 8

    first = await start(emulator, tmp_path, *args)
    await until(first, polling, "all 8 submitted and some, not all, finished")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    assert sum(emulator.stats.submissions_by_digest.values()) == 8

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert len(emulator.stats.submissions_by_digest) == 8
    assert set(emulator.stats.submissions_by_digest.values()) == {1}, "a document uploaded twice"
    records = output_lines(output)
    assert_each_index_once(records, 8)
    assert all(r["success"] and r["json_response"] for r in records)
    assert {Path(r["source"]).name for r in records} == {f"doc{i}.pdf" for i in range(8)}
    assert sum(r["page_count"] for r in records) == sum(range(1, 9))


async def test_ctrl_c_exits_130_and_leaves_a_valid_journal(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", [f"prompt {i}" for i in range(200)])
    emulator.config.latency = 0.1
    journal, output = tmp_path / "batch.journal", tmp_path / "out.jsonl"
    process = await start(emulator, tmp_path, *responses_args(emulator, tmp_path))
    await until(process, lambda: len(output_lines(output)) >= 20, "20 results were written")
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 10) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "interrupted" in stderr and "items:" in stderr

    db = sqlite3.connect(journal)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT idx, result FROM items").fetchall()
    records = Records.of(db)
    db.close()
    assert rows and all(result is not None for _, result in rows)
    for idx, result in rows:  # every record whole: complete JSON, its own index
        record = records.decode(result)
        assert record["index"] == idx and record["success"] is True
    written = output_lines(output)
    assert output.read_bytes().endswith(b"\n"), "no half-written output line"
    assert {r["index"] for r in written} <= {idx for idx, _ in rows} and len(rows) < 200
    reopened = Journal(journal, "responses")
    assert len(reopened.results()) == len(rows)
    reopened.close()


async def test_a_changed_prompt_is_sent_again_on_resume(emulator: Emulator, tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(5)]
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    args = responses_args(emulator, tmp_path)
    code, _, err = await run(emulator, *args)
    assert code == 0, err

    prompts[2] = "prompt 2, edited"
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    emulator.stats.reset()
    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert dict(emulator.stats.responses_by_digest) == {prompt_digest("prompt 2, edited"): 1}
    records = sorted(output_lines(tmp_path / "out.jsonl"), key=lambda r: r["index"])
    assert_each_index_once(records, 5)
    assert [bool(r.get("from_journal")) for r in records] == [True, True, False, True, True]
    assert "prompt 2, edited" in records[2]["raw_response"]


async def test_a_failed_prompt_exits_1(emulator: Emulator, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl", ["a", "b", "c"])
    emulator.faults.schedule("responses", "400")  # not retriable: that item fails
    code, _, err = await run(emulator, *responses_args(emulator, tmp_path, "--concurrency", "1"))
    assert code == 1, err
    records = output_lines(tmp_path / "out.jsonl")
    assert_each_index_once(records, 3)
    assert sum(not r["success"] for r in records) == 1
    assert "1 failed" in err


async def test_an_output_that_cannot_be_written_stops_sending_and_journals_what_was_paid(
    emulator: Emulator, tmp_path: Path
) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does: the CLI sends nothing
    more, lets the requests in flight finish into the journal, and ends with one line (exit
    3); the resume then sends each prompt that was not answered, and none twice."""
    prompts = [f"prompt {i}" for i in range(12)]
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    emulator.config.latency = 0.2  # lognormal: the answers come apart, 4 in flight at a time
    args = responses_args(emulator, tmp_path, "--concurrency", "4")
    args[args.index("--output") + 1] = "/dev/full"

    code, _, err = await run(emulator, *args)
    assert code == 3, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "genai-coroutines responses: cannot write the output /dev/full: No space left on device"
    ), err
    sent = {
        i for i, p in enumerate(prompts) if emulator.stats.responses_by_digest[prompt_digest(p)]
    }
    assert len(sent) < 12, "sending stopped when the output failed"
    assert succeeded_in_journal(tmp_path / "batch.journal") == sent, "every paid answer kept"

    code, _, err = await run(emulator, *responses_args(emulator, tmp_path), "--resume")
    assert code == 0, err
    assert all(emulator.stats.responses_by_digest[prompt_digest(p)] == 1 for p in prompts)
    records = output_lines(tmp_path / "out.jsonl")
    assert_each_index_once(records, 12)
    assert {r["index"] for r in records if r.get("from_journal")} == sent


async def test_with_the_batch_api_an_output_that_fails_ends_the_run_at_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Its batches may run for hours: the run ends as after Ctrl-C, the batch still running
    is left to OpenAI (journaled), and the resume collects it without paying again."""
    write_prompts(tmp_path / "prompts.jsonl", [f"prompt {i}" for i in range(5)])
    emulator.config.batch_seconds_per_line = 0.3  # files of 4 lines and 1: 1.2 s and 0.3 s
    batch = ["--batch-api", "--batch-poll-interval", "0.02", "--batch-max-requests-per-file", "4"]
    args = responses_args(emulator, tmp_path, *batch)
    args[args.index("--output") + 1] = "/dev/full"

    code, _, err = await run(emulator, *args)
    assert code == 3, err
    assert "Traceback" not in err and "keep going at OpenAI" in err
    assert succeeded_in_journal(tmp_path / "batch.journal") == {4}, "the 4-line batch was left"

    code, _, err = await run(emulator, *responses_args(emulator, tmp_path, *batch), "--resume")
    assert code == 0, err
    assert emulator.stats.batches_created == 2
    assert sorted(emulator.stats.batch_executions_by_custom_id.values()) == [1] * 5
    assert_each_index_once(output_lines(tmp_path / "out.jsonl"), 5)


async def test_an_output_in_a_missing_folder_is_bad_usage(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", ["a"])
    args = responses_args(emulator, tmp_path)
    args[args.index("--output") + 1] = str(tmp_path / "missing" / "out.jsonl")
    code, _, err = await run(emulator, *args)
    assert code == 2, err
    assert "Traceback" not in err and "cannot write the output" in err
    assert emulator.stats.total("responses") == 0


async def test_a_failed_document_exits_1(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "good.pdf").write_bytes(pdf(1, tag="good"))
    (tmp_path / "bad.pdf").write_bytes(pdf(1, tag="bad", extra=FAIL_MARKER))
    code, out, err = await run(
        emulator,
        "ocr",
        str(tmp_path / "good.pdf"),
        str(tmp_path / "bad.pdf"),
        "--api-url",
        emulator.marker_url,
        "--poll-interval",
        "0.02",
    )
    assert code == 1, err
    records = {r["source"]: r for r in map(orjson.loads, out.splitlines())}  # stdout by default
    assert records[str(tmp_path / "good.pdf")]["success"] is True
    assert records[str(tmp_path / "bad.pdf")]["success"] is False


def _existing_journal(tmp_path: Path) -> None:
    (tmp_path / "batch.journal").write_bytes(b"")


def _malformed_prompts(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(b'{"prompt": "a"}\n{"prompt": \n')


def _no_prompts(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"\n\n")


def _responses_journal(tmp_path: Path) -> None:
    Journal(tmp_path / "batch.journal", "responses").close()


@pytest.mark.parametrize(
    ("args", "prepare", "message"),
    [
        (["responses", "{prompts}", "--model", MODEL, "--bogus"], None, "unrecognized"),
        (["responses", "{tmp}/missing.jsonl", "--model", MODEL], None, "cannot read"),
        (["responses", "{prompts}"], None, "--model"),
        (["responses", "{tmp}/bad.jsonl", "--model", MODEL], _malformed_prompts, "bad.jsonl:2"),
        (["responses", "{tmp}/empty.txt", "--model", MODEL], _no_prompts, "no prompts"),
        (
            ["responses", "{prompts}", "--model", MODEL, "--journal", "{tmp}/batch.journal"],
            _existing_journal,
            "--resume",
        ),
        (["responses", "{prompts}", "--model", MODEL, "--resume"], None, "--journal"),
        (["ocr", "{tmp}/missing.pdf"], None, "not found"),
        (["ocr", "{tmp}/*.tiff"], None, "no file matches"),
        (
            ["ocr", "{prompts}", "--journal", "{tmp}/batch.journal", "--resume"],
            _responses_journal,
            "responses batch",
        ),
        (["nonsense"], None, "invalid choice"),
    ],
)
async def test_bad_usage_exits_2_before_touching_the_output(
    emulator: Emulator,
    tmp_path: Path,
    args: list[str],
    prepare: Callable[[Path], None] | None,
    message: str,
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", ["a"])
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"previous results\n")
    if prepare is not None:
        prepare(tmp_path)
    argv = [a.format(tmp=tmp_path, prompts=tmp_path / "prompts.jsonl") for a in args]
    code, _, err = await run(emulator, *argv, *(["--output", str(output)] if len(argv) > 1 else []))
    assert code == 2, err
    assert message in err
    assert output.read_bytes() == b"previous results\n"
    assert emulator.stats.total("responses") == 0


async def test_progress_bar_on_stderr_results_on_stdout(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("".join(f"question {i}\n" for i in range(20)))
    code, out, err = await run(
        emulator,
        "responses",
        str(tmp_path / "prompts.txt"),
        "--model",
        MODEL,
        "--base-url",
        emulator.openai_base_url,
        "--progress",
    )
    assert code == 0, err
    assert_each_index_once([orjson.loads(line) for line in out.splitlines()], 20)
    assert "20/20" in err and "ok=20" in err and "tokens=" in err
    assert "items: 20 (20 ok, 0 failed)" in err


async def test_demo_prints_its_table(emulator: Emulator) -> None:
    code, out, err = await run(emulator, "demo")
    assert code == 0, err
    header = out.lower().splitlines()[0].split()
    assert header[:3] == ["file", "pages", "vendor"]
    for name in ("invoice-acme.pdf", "invoice-globex.pdf", "receipt-initech.pdf"):
        assert name in out
    assert "Datalab cost" in out and "estimated cost" in out


async def test_request_options_reach_the_wire_translated(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", ["weather in Oslo?"])
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    (tmp_path / "tools.json").write_bytes(orjson.dumps([tool]))
    code, _, err = await run(
        emulator,
        *responses_args(emulator, tmp_path),
        "--tools",
        str(tmp_path / "tools.json"),
        "--tool-choice",
        '{"type": "function", "function": {"name": "get_weather"}}',
        "--metadata",
        '{"run": "nightly"}',
        "--no-store",
        "--include",
        "reasoning.encrypted_content",
    )
    assert code == 0, err
    (body,) = [seen["body"] for seen in emulator.stats.received if seen["endpoint"] == "responses"]
    assert body["tools"][0]["name"] == "get_weather"  # flat Responses shape
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["metadata"] == {"run": "nightly"}
    assert body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    (record,) = output_lines(tmp_path / "out.jsonl")
    assert '"function_call"' in record["raw_response"]


def test_emulate_accepts_every_fault_kind_and_refuses_unknown_ones() -> None:
    parser = build_parser()
    args = parser.parse_args(["emulate", "--fault", "responses:503-retry-after:0.1"])
    assert args.fault == [("responses", "503-retry-after", 0.1)]
    assert main(["emulate", "--fault", "responses:melt:0.1"]) == 2
    assert main(["emulate", "--fault", "nowhere:503:0.1"]) == 2


async def test_estimate_sends_nothing_and_prints_each_paths_figures(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", [f"question {n}" for n in range(5)])
    args = responses_args(
        emulator, tmp_path, "--estimate", "--rpm", "60", "--max-output-tokens", "16"
    )
    code, out, err = await run(emulator, *args)
    assert code == 0, err
    assert sum(emulator.stats.requests.values()) == 0, "nothing sent"
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "batch.journal").exists()
    figures = orjson.loads(out)
    assert figures["prompts"] == 5 and set(figures["paths"]) == {"sync", "flex", "batch_api"}
    for path in figures["paths"].values():
        assert {"input_tokens", "output_tokens", "input_cost_usd", "output_cost_usd"} <= set(path)
        assert {"cost_usd", "minutes", "with_prompt_caching"} <= set(path)
        assert path["cost_usd"] == pytest.approx(path["input_cost_usd"] + path["output_cost_usd"])
    assert figures["paths"]["sync"]["minutes"] == pytest.approx(5 / 60, abs=0.01)
