"""`RedisStore` against a real `redis-server`: each operation, the server's clock, lease
reclaim, idle expiry, the key never stored, one `KeyLimits` per URL, an unreachable
store at start, and Redis lost mid-batch.

One server per module (each test namespaces its own keys); the tests that stop Redis
start their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from genai_coroutines import DocumentProcessor, ResponsesProcessor
from genai_coroutines.cli import main
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import LOCAL, KeyLimits, key_digest, limit_key
from genai_coroutines.engine.limits import ENV_STORE, budget_key, limits_for
from genai_coroutines.engine.redis_store import RedisStore, redact
from genai_coroutines.engine.store import (
    BUDGET_KEEP_SECS,
    BudgetView,
    LimitStoreUnavailable,
    MemoryStore,
)
from tests.documents_support import ServerPages, config_for, pages_admitted
from tests.responses_support import request_for
from tests.samples import pdf
from tests.scale_support import RedisServer, free_port, prompts, redis_server

STORE_LOGGER = "genai_coroutines.engine.redis_store"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return limit_key("test", request.node.name, "model")


async def test_each_operation_matches_the_memory_store(server: RedisServer, key: str) -> None:
    redis_store = RedisStore(server.url)
    for store in (MemoryStore(), redis_store):
        assert await store.limits(key) == {}
        assert (await store.take(key, [("requests", 5)])).wait == 0  # no bucket: unlimited
        await store.shape(key, "requests", 600, 10)  # 10/s, 10 banked; a new bucket is full
        await store.shape(key, "tokens", 6000, 100)
        assert await store.limits(key) == {"requests": 600, "tokens": 6000}
        for _ in range(10):
            assert (await store.take(key, [("requests", 1), ("tokens", 5)])).wait == 0
        wait = (await store.take(key, [("requests", 1), ("tokens", 5)])).wait  # empty: 1/10 s
        assert 0.05 < wait <= 0.1
        await store.adjust(key, [("requests", 3)])  # settle: 3 back
        assert (await store.take(key, [("requests", 3)])).wait == 0
        await store.adjust(key, [("tokens", 1000)])  # never above capacity
        borrowed = await store.take(key, [("tokens", 101)])  # above capacity: full, borrows
        assert borrowed.wait == 0 and borrowed.ticket is not None
        assert (await store.take(key, [("tokens", 1)])).wait > 0.0  # and the debt is repaid first
        # given, then lowered (nothing was taken after the borrow: nothing in transit)
        await store.adjust(key, [("tokens", 1000)], [("tokens", -50)], borrowed.ticket)
        assert (await store.take(key, [("tokens", 1)])).wait > 0.4  # ~51 / 100 per s
        await store.shape(key, "tokens", 12000, 200)  # a deficit is carried as time to repay
        assert 0.45 < (await store.take(key, [("tokens", 1)])).wait < 0.52
        await store.pause(key, 0.5)
        await store.pause(key, 0.2)  # pauses do not stack
        wait = (await store.take(key, [("requests", 1)])).wait
        assert 0.5 < wait <= 0.61  # the pause, then one request at 10/s
        lease = await store.lease(key, 3, 5, 60)
        assert lease is not None
        assert await store.lease(key, 3, 5, 60) is None  # full
        second = await store.lease(key, 2, 5, 60)
        assert second is not None
        await store.release(key, lease)
        await store.release(key, lease)  # twice: ignored
        assert await store.lease(key, 9, 5, 60) is None  # above total: only alone
        await store.release(key, second)
        alone = await store.lease(key, 9, 5, 60)
        assert alone is not None
        await store.release(key, alone)
        await store.hold(key, "batch_1", 4, 60)  # held, however much else is
        await store.hold(key, "batch_1", 3, 60)  # the same id again: replaced, not added
        assert await store.lease(key, 3, 5, 60) is None
        assert (two := await store.lease(key, 2, 5, 60)) is not None
        await store.release(key, "batch_1")
        await store.release(key, two)
        assert await store.surcharges(key) == {}
        assert await store.learn_surcharge(key, "text", 100) == 100
        assert await store.learn_surcharge(key, "text", 0) == 90  # a smaller one: slowly
        assert await store.learn_surcharge(key, "text", 200) == 200  # a larger one: at once
        assert await store.surcharges(key) == {"text": 200}
    redis_store.close()


async def test_budget_operations_match_the_memory_store(
    server: RedisServer, raw: aioredis.Redis, request: pytest.FixtureRequest
) -> None:
    name = f"the customer's nightly job {request.node.name}"
    for store in (MemoryStore(), RedisStore(server.url)):
        key = budget_key(name, "usd")
        view = await store.budget_reserve(key, "a", 4.0, 10.0, 60, False)
        assert view == BudgetView(True, 0.0, 0.0)
        assert await store.budget_reserve(key, "b", 5.0, 10.0, 60, False) == (True, 0.0, 4.0)
        assert await store.budget_reserve(key, "b", 2.0, 10.0, 60, False) == (False, 0.0, 9.0)
        await store.budget_settle(key, "a", 4.0, 1.5, 60)  # a's item cost 1.5 of its 4
        assert await store.budget_reserve(key, "b", 2.0, 10.0, 60, False) == (True, 1.5, 5.0)
        assert await store.budget_reserve(key, "a", 9.0, 10.0, 60, True) == (True, 1.5, 7.0)
        await store.budget_settle(key, "a", 0.0, 0.0, 0)  # a is done: what it held is freed
        await store.budget_settle(key, "b", 7.0, 7.0, 60)
        assert await store.budget_reserve(key, "c", 1.5, 10.0, 60, False) == (True, 8.5, 0.0)
        assert await store.budget_reserve(key, "c", 0.1, 10.0, 60, False) == (False, 8.5, 1.5)
    keep = await raw.pttl(f"{budget_key(name, 'usd')}:budget")
    assert BUDGET_KEEP_SECS * 1000 - 60_000 < keep <= BUDGET_KEEP_SECS * 1000
    assert not [k async for k in raw.scan_iter("*nightly*")], "the name is stored as a digest"


async def test_a_budget_holder_that_died_is_dropped_after_its_ttl(
    server: RedisServer, request: pytest.FixtureRequest
) -> None:
    key = budget_key(request.node.name, "cents")
    died, alive = RedisStore(server.url), RedisStore(server.url)
    assert (await died.budget_reserve(key, "died", 8.0, 10.0, 0.2, False)).granted
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not (await alive.budget_reserve(key, "alive", 8.0, 10.0, 60, False)).granted:
        assert loop.time() - started < 5, "the reservation was never dropped"
        await asyncio.sleep(0.02)
    assert loop.time() - started >= 0.15
    died.close()
    alive.close()


async def test_a_named_budget_refuses_the_rest_once_redis_is_lost(emulator: Emulator) -> None:
    """A budget several processes share cannot be counted in one of them: once Redis is
    lost the rest end `budget_exceeded`, nothing more sent, and the limits carry on."""
    with redis_server() as lost:
        responses = ResponsesProcessor(limits_store=lost.url)
        request = request_for(emulator, [f"lost {i}" for i in range(30)], max_concurrent_requests=1)
        seen: list[dict[str, Any]] = []
        async for result in responses.stream(request, max_cost_usd=1.0, budget_name="lost"):
            seen.append(result)
            if len(seen) == 3:
                lost.stop()
    assert [r["success"] for r in seen[:3]] == [True] * 3
    assert sum(emulator.stats.responses_by_digest.values()) == sum(r["success"] for r in seen)
    refused = [r for r in seen if not r["success"]]
    assert refused and {r["error_type"] for r in refused} == {"budget_exceeded"}
    assert "cannot be counted" in refused[0]["error"]


async def test_a_learned_ceiling_matches_the_memory_store(
    server: RedisServer, key: str, raw: aioredis.Redis
) -> None:
    redis_store = RedisStore(server.url)
    for store, name in ((MemoryStore(), key), (redis_store, f"{key}:redis")):
        three, two, four = [await store.lease(name, n, 100, 60) for n in (3, 2, 4)]
        assert three and two and four
        assert await store.learn_ceiling(name, four, 60) == 5  # what the other two hold
        await store.release(name, four)
        assert await store.lease(name, 1, 100, 60) is None  # 5 of a ceiling of 5 held
        await store.release(name, two)
        assert await store.learn_ceiling(name, three, 60) is None  # nothing else held
        assert (one := await store.lease(name, 2, 100, 60)) is not None
        assert await store.learn_ceiling(name, three, 60) == 2  # lowered to what others hold
        assert await store.learn_ceiling(name, three, 60) == 1  # and always lowered further
        for lease in (three, one):
            await store.release(name, lease)
        assert (alone := await store.lease(name, 5, 100, 60)) is not None  # admitted alone
        assert await store.lease(name, 1, 100, 60) is None
        await store.release(name, alone)
        assert await store.learn_ceiling(name, "gone", 60) is None  # nothing held
    assert 0 < await raw.pttl(f"{key}:redis:ceiling") <= 60_000  # Redis expires it itself
    redis_store.close()


async def test_a_learned_ceiling_expires_after_its_ttl(server: RedisServer, key: str) -> None:
    redis_store = RedisStore(server.url)
    for store, name in ((MemoryStore(), key), (redis_store, f"{key}:redis")):
        held = await store.lease(name, 3, 100, 60)
        refused = await store.lease(name, 3, 100, 60)
        assert held and refused
        assert await store.learn_ceiling(name, refused, 0.2) == 3
        await store.release(name, refused)
        assert await store.lease(name, 1, 100, 60) is None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (lease := await store.lease(name, 1, 100, 60)) is None:
            assert loop.time() - started < 5, "the ceiling never expired"
            await asyncio.sleep(0.02)
        assert loop.time() - started >= 0.15
        for done in (held, lease):
            await store.release(name, done)
    redis_store.close()


async def test_a_page_limit_learned_in_redis_holds_for_every_process(
    server: RedisServer, emulator: Emulator
) -> None:
    emulator.config.datalab_max_pages_in_flight = 30  # the clients keep their default 5,000
    emulator.config.seconds_per_page = 0.05  # jobs long enough to overlap on a busy machine
    documents = [pdf(2 + i % 5, tag=str(i)) for i in range(60)]
    mine = RedisStore(server.url)
    first = DocumentProcessor(config_for(emulator), limits=KeyLimits(mine))
    results = await first.process_multiparts(documents)

    assert [r["error_type"] for r in results] == [None] * 60
    assert max(r["attempts"] for r in results) > 1
    other = RedisStore(server.url)  # another process's view of the key's limits
    ceiling = await pages_admitted(other, emulator)
    assert 20 <= ceiling <= 30
    after = ServerPages(config_for(emulator), emulator, limits=KeyLimits(other))
    again = await after.process_multiparts([pdf(2 + i % 5, tag=f"b{i}") for i in range(20)])
    assert [r["attempts"] for r in again] == [1] * 20, [r["error"] for r in again]
    assert 0 < max(after.seen) <= ceiling
    other.close()
    mine.close()


async def test_creation_slots_are_one_count_for_every_client_of_one_redis(
    server: RedisServer, key: str, raw: aioredis.Redis
) -> None:
    """The Batch API's batches created per hour: two clients of one Redis (two processes)
    count one sliding window, as one `MemoryStore` does for the batches of one process."""
    memory = MemoryStore()
    one, two = RedisStore(server.url), RedisStore(server.url)
    for first, second, name in ((memory, memory, key), (one, two, f"{key}:redis")):
        assert await first.take_slot(name, 3, 60) == 0
        assert await second.take_slot(name, 3, 60) == 0
        assert await first.take_slot(name, 3, 60) == 0
        assert 59 < await second.take_slot(name, 3, 60) <= 60  # full: nothing counted
        assert 59 < await first.take_slot(name, 3, 60) <= 60
        assert await second.take_slot(name, 4, 60) == 0  # the latest limit is the one in force
        assert 59 < await first.take_slot(name, 2, 60) <= 60  # until the 3rd oldest leaves
        # A short window: the oldest leaves it, and a slot frees.
        assert await first.take_slot(f"{name}:short", 1, 0.2) == 0
        assert 0 < await second.take_slot(f"{name}:short", 1, 0.2) <= 0.2
    assert await raw.zcard(f"{key}:redis:slots") == 4
    assert 0 < await raw.pttl(f"{key}:redis:slots") <= 60_000  # gone a window after the last
    one.close()
    two.close()


async def test_operations_run_on_the_server_clock(
    server: RedisServer, key: str, raw: aioredis.Redis
) -> None:
    store = RedisStore(server.url)
    await store.shape(key, "requests", 60, 1)
    assert (await store.take(key, [("requests", 1)])).wait == 0
    lease = await store.lease(key, 1, 1, 30)
    seconds, micros = await raw.time()
    server_now = seconds + micros / 1e6
    state = await raw.hgetall(f"{key}:limits")
    assert abs(float(state["requests:t"]) - server_now) < 1.0  # stamped with TIME
    held = await raw.hgetall(f"{key}:leases")
    units, expires = held[lease].split()
    assert units == "1" and abs(float(expires) - (server_now + 30)) < 1.0
    # The scripts are loaded once and sent by digest.
    shas = [script.sha for script in store._connect().scripts.values()]
    assert all(await raw.script_exists(*shas))
    store.close()


async def test_a_lease_not_released_is_reclaimed_after_its_ttl(
    server: RedisServer, key: str
) -> None:
    died = RedisStore(server.url)  # a holder that dies without releasing
    alive = RedisStore(server.url)
    assert await died.lease(key, 4, 4, 0.2) is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await alive.lease(key, 1, 4, 60) is None
    while (lease := await alive.lease(key, 4, 4, 60)) is None:
        assert loop.time() - started < 5, "the lease was never reclaimed"
        await asyncio.sleep(0.02)
    assert loop.time() - started >= 0.15
    await alive.release(key, lease)
    died.close()
    alive.close()


async def test_idle_state_expires_and_a_known_bucket_comes_back_full(
    server: RedisServer, key: str, raw: aioredis.Redis
) -> None:
    store = RedisStore(server.url, idle_ttl=0.2)
    await store.shape(key, "requests", 60, 2)
    assert 0 < await raw.pttl(f"{key}:limits") <= 200
    assert (await store.take(key, [("requests", 2)])).wait == 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await raw.exists(f"{key}:limits"):
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    # This process still knows the shape: the bucket is recreated full, and limits hold.
    assert (await store.take(key, [("requests", 2)])).wait == 0
    assert (await store.take(key, [("requests", 1)])).wait > 0.5
    store.close()


async def test_the_api_key_never_reaches_redis(
    server: RedisServer, raw: aioredis.Redis, emulator: Emulator
) -> None:
    await raw.flushall()  # only this test's state is scanned
    emulator.config.openai_rpm = 6000
    emulator.config.openai_tpm = 1_000_000
    emulator.config.burst_seconds = 1
    responses = ResponsesProcessor(limits_store=server.url)
    result = await responses.process_batch(request_for(emulator, prompts(20, seed=1)))
    assert result["total_success"] == 20
    documents = DocumentProcessor(
        config_for(emulator, max_pages_in_flight=10, requests_per_minute=6000),
        limits_store=server.url,
    )
    done = await documents.process([pdf(2, tag=f"k{i}") for i in range(4)])
    assert all(r["success"] for r in done)

    secrets = (emulator.config.openai_api_key, emulator.config.datalab_api_key)
    keys = [name async for name in raw.scan_iter("*")]
    assert keys, "the batches stored nothing"
    digests = {key_digest(secret) for secret in secrets}
    for name in keys:
        assert name.startswith("genai-coroutines:{") and "}" in name  # a hash tag
        assert any(digest in name for digest in digests)
        assert await raw.pttl(name) != -1  # idle state expires (-2: it has already)
        held = await (raw.zrange(name, 0, -1) if name.endswith(":sent") else raw.hgetall(name))
        dumped = name + repr(held)
        for secret in secrets:
            assert secret not in dumped
    # leases: all released; the takes in transit may have expired already
    assert {name.rsplit(":", 1)[1] for name in keys} - {"sent"} == {"limits"}


async def test_one_key_limits_per_store_url(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    shared = limits_for(server.url)
    assert limits_for(server.url) is shared
    assert ResponsesProcessor(limits_store=server.url).limits is shared
    assert DocumentProcessor(config_for(emulator), limits_store=server.url).limits is shared
    monkeypatch.setenv(ENV_STORE, server.url)
    assert ResponsesProcessor().limits is shared  # the environment variable
    assert ResponsesProcessor(limits_store="local").limits is LOCAL  # overrides it
    monkeypatch.delenv(ENV_STORE)
    assert ResponsesProcessor().limits is LOCAL
    with pytest.raises(ValueError, match="redis://"):
        ResponsesProcessor(limits_store="memcached://127.0.0.1:1")
    with pytest.raises(ValueError, match="not both"):
        ResponsesProcessor(limits=LOCAL, limits_store=server.url)


async def test_an_unreachable_store_fails_at_start_naming_the_url(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens here
    url = f"redis://worker:s3cret@127.0.0.1:{port}/0"
    assert redact(url) == f"redis://127.0.0.1:{port}/0"
    processor = ResponsesProcessor(limits_store=url)
    with pytest.raises(LimitStoreUnavailable) as caught:
        await processor.process_batch(request_for(emulator, ["hello"]))
    message = str(caught.value)
    assert f"redis://127.0.0.1:{port}/0" in message and "s3cret" not in message
    documents = DocumentProcessor(config_for(emulator), limits_store=url)
    with pytest.raises(LimitStoreUnavailable):
        await documents.process([pdf(1)])
    assert emulator.stats.requests == {}  # nothing was sent

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("hello\n")
    output = tmp_path / "out.jsonl"
    monkeypatch.setenv("OPENAI_API_KEY", emulator.config.openai_api_key)
    code = await asyncio.to_thread(
        main,
        [
            "responses", str(prompts_file), "--model", "gpt-4o-mini",
            "--base-url", emulator.openai_base_url, "--limits-store", url, "-o", str(output),
        ],
    )  # fmt: skip
    assert code == 2
    assert not output.exists()  # refused before the output was opened
    assert emulator.stats.requests == {}


@pytest.mark.parametrize("kind", ["responses", "documents"])
async def test_redis_lost_mid_batch_degrades_with_one_warning(
    kind: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.openai_rpm = 3000
    emulator.config.openai_tpm = 1_000_000
    emulator.config.burst_seconds = 1
    emulator.config.datalab_max_pages_in_flight = 6
    emulator.config.seconds_per_page = 0.02
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with redis_server() as lost:
        if kind == "responses":
            n = 150
            stream = ResponsesProcessor(limits_store=lost.url).stream(
                request_for(emulator, prompts(n, seed=2), max_concurrent_requests=20)
            )
        else:
            n = 24
            processor = DocumentProcessor(
                config_for(emulator, max_pages_in_flight=6, max_concurrent_requests=8),
                limits_store=lost.url,
            )
            stream = processor.stream([pdf(2, tag=f"lost{i}") for i in range(n)])
        results = []
        async for result in stream:
            results.append(result)
            if len(results) == n // 3:
                lost.stop()  # mid-batch: every later operation finds Redis gone
        store = limits_for(lost.url).store
        assert isinstance(store, RedisStore) and store.degraded
        with pytest.raises(LimitStoreUnavailable):  # a new batch is refused while it is down
            await limits_for(lost.url).ready()
        back = RedisServer(port=lost.port)  # the same URL, up again
        try:
            await limits_for(lost.url).ready()
            assert not store.degraded
        finally:
            back.stop()
    assert sorted(r["index"] for r in results) == list(range(n))  # nothing lost
    assert all(r["success"] for r in results), [r for r in results if not r["success"]][:3]
    lost_lines = [r for r in caplog.records if r.name == STORE_LOGGER and "lost" in r.getMessage()]
    assert len(lost_lines) == 1, [r.getMessage() for r in lost_lines]
    assert f"127.0.0.1:{lost.port}" in lost_lines[0].getMessage()
    if kind == "responses":  # the in-process limits still held the rate, with no burst
        assert emulator.stats.rate_limited <= 1  # at the switch (the store's was spent)
    else:  # and the pages: no job was refused for pages in flight
        assert emulator.stats.snapshot()["duplicate_submissions"] == 0


async def test_a_reply_takes_off_what_every_client_of_the_store_has_in_transit(
    server: RedisServer, key: str
) -> None:
    """Two clients of one store stand for two processes: the reply to the first one's
    request is lowered by the takes after it of both (they had not reached the server
    when it counted its `remaining`), not by its own client's alone."""
    memory = MemoryStore()
    for one, two in ((memory, memory), (RedisStore(server.url), RedisStore(server.url))):
        await one.shape(key, "tokens", 600, 10_000)  # 10 tokens a second: no refill to speak of
        answered = await one.take(key, [("tokens", 1_000)])
        assert answered.ticket is not None
        assert (await two.take(key, [("tokens", 300)])).wait == 0  # the other process
        assert (await one.take(key, [("tokens", 200)])).wait == 0
        await one.adjust(key, [], [("tokens", 5_000)], answered.ticket)
        assert (await one.take(key, [("tokens", 4_490)])).wait == 0  # 5,000 - 300 - 200
        assert (await two.take(key, [("tokens", 20)])).wait > 0.5, "the level was 4,500"
