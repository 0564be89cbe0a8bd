"""`genai_coroutines.ray` in a real local Ray cluster (`ray.init(num_cpus=2)`, once per
session), against the emulator in its own process and a real Redis.

The workers import this work tree (its root on their PYTHONPATH), not an installed copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from genai_coroutines import DocumentConfig, ResponsesRequest
from genai_coroutines.ray import documents_stage, responses_stage
from tests.samples import pdf
from tests.scale_support import (  # noqa: E402
    DATALAB_KEY,
    OPENAI_KEY,
    ROOT,
    EmulatorProcess,
    RedisServer,
    billed_usd,
    emulator_process,
    prompts,
    redis_server,
    responses_sent,
)

RPM, TPM = 9000, 2_100_000  # requests bind; tokens have headroom
QUOTED = re.compile(r"the next request up to \$([0-9.e+-]+)")
"""The estimate a `budget_exceeded` refusal quotes for the request it refused."""

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own, at start


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",  # a cluster of its own, even beside another session's
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture(scope="module")
def limited() -> Iterator[EmulatorProcess]:
    flags = ["--openai-rpm", str(RPM), "--openai-tpm", str(TPM), "--burst-seconds", "1"]
    with emulator_process(*flags, "--latency", "0.05", "--datalab-max-pages", "8") as emulator:
        yield emulator


def request_for(emulator: EmulatorProcess, **options: Any) -> ResponsesRequest:
    return ResponsesRequest(
        api_key=OPENAI_KEY,
        base_url=emulator.openai_base_url,
        model="gpt-4o-mini",
        system_prompt="Be terse.",
        user_prompts=["-"],
        response_format={"type": "text"},
        retry_delay_min_ms=50,
        **options,
    )


def test_a_pipeline_of_600_prompts_over_3_actors_sharing_the_store(
    ray_cluster: None, limited: EmulatorProcess, store: RedisServer
) -> None:
    limited.reset()
    rows = [{"id": i, "prompt": text} for i, text in enumerate(prompts(600, seed=7))]
    stage = responses_stage(
        request_for(limited, max_concurrent_requests=20), limits_store=store.url
    )
    answered = (
        ray.data.from_items(rows)
        .map_batches(stage, concurrency=3, batch_size=100, batch_format="pandas", num_cpus=0.25)
        .take_all()
    )
    stats = limited.stats()
    print(
        f"\nRay Data, 3 actors, one store: {responses_sent(stats)} requests, "
        f"{stats['rate_limited']} answered 429"
    )
    assert sorted(row["id"] for row in answered) == list(range(600))  # every row, once
    assert all(row["success"] for row in answered)
    by_id = {row["id"]: row for row in answered}
    for row in rows:  # input columns kept, answers added
        out = by_id[row["id"]]
        assert out["prompt"] == row["prompt"]
        assert out["response_text"] and out["raw_response"].startswith("{")
        assert out["total_tokens"] > 0 and out["attempts"] >= 1
        assert out["error"] is None and out["error_type"] is None
    assert stats["duplicate_completions"] == 0
    assert stats["rate_limited"] <= 0.01 * responses_sent(stats)


def test_per_item_failures_are_rows_not_failed_tasks(
    ray_cluster: None, limited: EmulatorProcess, tmp_path: Path
) -> None:
    paths = []
    for i in range(4):
        path = tmp_path / f"doc{i}.pdf"
        path.write_bytes(pdf(2, tag=f"ray{i}"))
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.pdf"))
    config = DocumentConfig(
        api_key=DATALAB_KEY,
        api_url=limited.marker_url,
        poll_interval_secs=0.02,
        base_retry_delay_secs=0.02,
        max_pages_in_flight=8,
    )
    documents = (
        ray.data.from_items([{"path": p, "n": i} for i, p in enumerate(paths)])
        .map_batches(
            documents_stage(config, concurrency=2),
            concurrency=2,
            batch_size=3,
            batch_format="pandas",
            num_cpus=0.25,
        )
        .take_all()
    )
    by_n = {row["n"]: row for row in documents}
    assert sorted(by_n) == list(range(5))
    for i in range(4):
        assert by_n[i]["success"] and f"Page 0 of doc{i}.pdf" in by_n[i]["content"]
        assert by_n[i]["cost_cents"] > 0
    assert not by_n[4]["success"] and by_n[4]["error_type"] == "read_error"
    assert by_n[4]["content"] == ""

    stage = responses_stage(request_for(limited))  # numpy batches and a bad prompt
    rows = (
        ray.data.from_items([{"prompt": "hello"}, {"prompt": None}])
        .map_batches(stage, concurrency=1, batch_size=2, num_cpus=0.25)
        .take_all()
    )
    assert [row["success"] for row in rows] == [True, False]
    assert rows[1]["error_type"] == "invalid_input" and rows[1]["response_text"] == ""


def test_an_actor_keeps_one_session_and_a_rerun_with_journal_dir_pays_nothing_again(
    ray_cluster: None, limited: EmulatorProcess, tmp_path: Path
) -> None:
    """One actor, six Ray batches of ten rows, four requests at a time: its connections
    (distinct client addresses at the emulator) are one pool of four for its lifetime, not
    a pool per batch. The same rows again with the same `journal_dir` come back from each
    batch's journal: nothing is sent."""
    rows = [{"n": i, "prompt": text} for i, text in enumerate(prompts(60, seed=11))]
    stage = responses_stage(
        request_for(limited, max_concurrent_requests=4), journal_dir=tmp_path / "journals"
    )

    def answered() -> list[dict[str, Any]]:
        return (
            ray.data.from_items(rows)
            .map_batches(stage, concurrency=1, batch_size=10, batch_format="pandas", num_cpus=0.25)
            .take_all()
        )

    limited.reset()
    first = answered()
    stats = limited.stats()
    assert sorted(row["n"] for row in first) == list(range(60)) and all(r["success"] for r in first)
    assert responses_sent(stats) == 60
    assert stats["client_connections"] <= 4, "one pool for the actor's six batches"
    assert len(list((tmp_path / "journals").glob("responses-*.journal"))) == 6

    limited.reset()
    again = answered()
    assert responses_sent(limited.stats()) == 0, "every batch answered from its journal"
    by_n = {row["n"]: row for row in first}
    assert all(row["response_text"] == by_n[row["n"]]["response_text"] for row in again)


def test_actors_on_one_budget_name_spend_it_once_between_them(
    ray_cluster: None, limited: EmulatorProcess, store: RedisServer, tmp_path: Path
) -> None:
    """Two actors, each sending one request at a time, on one `budget_name` in the store:
    what the emulator billed stays within the budget plus one request per actor, where
    each actor alone would spend the whole budget."""
    limited.reset()
    length = 400
    texts = [text[:length].ljust(length, ".") for text in prompts(120, seed=23)]
    budget = 0.0008
    stage = responses_stage(
        request_for(limited, max_concurrent_requests=1, max_output_tokens=64),
        limits_store=store.url,
        concurrency=2,
        max_cost_usd=budget,
        budget_name=f"ray {tmp_path.name}",
    )
    rows = (
        ray.data.from_items([{"prompt": text} for text in texts])
        .map_batches(stage, concurrency=2, batch_size=20, batch_format="pandas", num_cpus=0.25)
        .take_all()
    )
    sent = sum(1 for row in rows if row["success"])
    refused = [row for row in rows if not row["success"]]
    assert len(rows) == 120 and refused and sent
    assert {row["error_type"] for row in refused} == {"budget_exceeded"}
    estimate = max(float(QUOTED.findall(row["error"])[0]) for row in refused)
    billed = billed_usd(limited.stats()["billed_tokens"])
    print(f"\nRay, 2 actors, one budget of ${budget}: {sent} sent, ${billed:.6f} billed")
    assert budget - 2 * estimate <= billed <= budget + 2 * estimate


def test_without_a_store_each_actor_gets_its_share_of_given_limits() -> None:
    request = ResponsesRequest(
        api_key=OPENAI_KEY,
        model="gpt-4o-mini",
        system_prompt="",
        user_prompts=["-"],
        response_format={"type": "text"},
        requests_per_minute=3000,
        tokens_per_minute=90_000,
    )
    stage = responses_stage(request, limits_store="local", concurrency=3)
    assert stage.request.requests_per_minute == 1000
    assert stage.request.tokens_per_minute == 30_000
    config = DocumentConfig(api_key=DATALAB_KEY, requests_per_minute=60, max_pages_in_flight=100)
    pages = documents_stage(config, limits_store="local", concurrency=4).config
    assert pages.requests_per_minute == 15 and pages.max_pages_in_flight == 25


STAGE_ARGUMENTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("responses", {"request": {"model": "m"}}, TypeError, "request must be a ResponsesRequest"),
    ("documents", {"config": {"api_key": "k"}}, TypeError, "config must be a DocumentConfig"),
    ("responses", {"concurrency": 0}, ValueError, "concurrency must be at least 1"),
    ("documents", {"concurrency": 2.0}, TypeError, "concurrency must be an int"),
    ("responses", {"prompt_column": 1}, TypeError, "prompt_column must be a str"),
    ("documents", {"path_column": ""}, ValueError, "path_column must not be empty"),
    ("responses", {"limits_store": 6379}, TypeError, "limits_store must be a str"),
    ("responses", {"journal_dir": 3}, TypeError, "journal_dir must be a path"),
    ("documents", {"journal_dir": ""}, ValueError, "journal_dir must not be empty"),
    ("responses", {"max_cost_usd": 1.0}, ValueError, "needs budget_name"),
    ("responses", {"budget_name": "n"}, ValueError, "budget_name needs max_cost_usd"),
    ("responses", {"max_cost_usd": "1"}, TypeError, "max_cost_usd must be a number"),
    ("documents", {"budget_name": 5, "max_cost_cents": 9}, TypeError, "budget_name must be"),
    (
        "documents",
        {"max_cost_cents": 9.5, "budget_name": "n", "concurrency": 2, "limits_store": "local"},
        ValueError,
        "needs limits_store",
    ),
]


@pytest.mark.parametrize(("stage", "changes", "error", "named"), STAGE_ARGUMENTS)
def test_a_stage_refuses_bad_arguments_naming_them_before_any_actor(
    stage: str, changes: dict[str, Any], error: type[Exception], named: str
) -> None:
    if stage == "responses":
        request = ResponsesRequest(
            api_key=OPENAI_KEY,
            model="gpt-4o-mini",
            system_prompt="",
            user_prompts=["-"],
            response_format={"type": "text"},
        )
        with pytest.raises(error, match=named):
            responses_stage(**{"request": request, **changes})
    else:
        with pytest.raises(error, match=named):
            documents_stage(**{"config": DocumentConfig(api_key=DATALAB_KEY), **changes})
