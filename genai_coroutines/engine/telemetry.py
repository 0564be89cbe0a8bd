"""OpenTelemetry metrics and spans, through the API's global providers (the `[otel]` extra).

The library configures nothing: it asks `opentelemetry.metrics` and `opentelemetry.trace`
for their global providers, so the data flows wherever the application's SDK sends it.
Without `opentelemetry-api` installed, or with it but no SDK provider set, a batch gets
no `BatchTelemetry` and every hook on the request path is one `is None` test: the API's
no-op instruments would still cost each request its attribute dicts and calls. Whether
an SDK is installed is looked up once per batch, when it starts.

Spans: one per batch (`genai_coroutines batch`), one per item under it, and one per
request attempt under its item (or under the batch for the Batch API's file and batch
requests), named `{gen_ai.operation.name} {gen_ai.request.model}` as the GenAI
conventions name client spans. A poll (of a background response, a Batch, a Datalab
job) is an operation of its own (`poll_response`, `poll_batch`, `poll_job`) and never
counts tokens: tokens are counted once per item, from its result, so an answer polled
ten times, or a Batch API line, counts once, and one answered from the journal (paid by
an earlier run) or by its twin (`dedupe`) not at all.

Attributes are of low cardinality: provider, operation, model, error type, token type,
HTTP status. Never a prompt, an index (except on an item's own span), or a key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .http import Reply
from .outcome import Answered, Failure, ItemEnd, Outcome, Success
from .pricing import Charges, PriceModel

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation

    _API = True
except ImportError:  # the [otel] extra is not installed: there is nothing to report to
    _API = False

_NO_METERS: tuple[type, ...] = ()
"""The API's own meter providers: the no-op one, and the proxy it hands out until an SDK's
is set (private: where it has moved, a batch measures into no-op instruments instead)."""
if _API:
    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        _NO_METERS = (metrics.NoOpMeterProvider, _ProxyMeterProvider)
    except ImportError:
        _NO_METERS = (metrics.NoOpMeterProvider,)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

SCOPE = "genai_coroutines"
OPENAI, DATALAB = "openai", "datalab"
CHAT = "chat"
"""`gen_ai.operation.name` of a Responses API request."""
POLL_RESPONSE, POLL_BATCH, POLL_JOB = "poll_response", "poll_batch", "poll_job"
UPLOAD_FILE, CREATE_BATCH = "upload_file", "create_batch"
POLLS = frozenset({POLL_RESPONSE, POLL_BATCH, POLL_JOB})

TOKEN_BUCKETS = [4.0**n for n in range(14)]
"""`gen_ai.client.token.usage` buckets, as the GenAI conventions advise (1 to 4**13)."""
DURATION_BUCKETS = [0.01 * 2.0**n for n in range(14)]
"""`gen_ai.client.operation.duration` buckets, as advised (0.01 s to 81.92 s)."""

RATE_LIMIT_KINDS = {"capacity_unavailable": "capacity", "insufficient_quota": "quota"}
"""A 429's kind by its error type; any other 429 is "rate"."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a batch's items are, for their metrics and spans (an adapter's `identity`)."""

    operation: str
    provider: str | None = None
    """None: the items span providers (a pipeline's OCR then extraction)."""
    model: str | None = None

    def attributes(self) -> dict[str, str]:
        found = {"gen_ai.operation.name": self.operation}
        if self.provider:
            found["gen_ai.provider.name"] = self.provider
        if self.model:
            found["gen_ai.request.model"] = self.model
        return found


Key = tuple[str, frozenset[tuple[str, str]]]
"""A running total's counter and attributes."""


class _Tally(dict[Key, float]):
    """One batch's running totals, written by its event loop's thread alone."""

    __slots__ = ()

    def add(self, key: Key, amount: float) -> None:
        self[key] = self.get(key, 0) + amount


class _Totals:
    """The running totals of the counters counted per item or per answer (items finished
    and failed, retries, 429s, cost, pages, cents), which observable counters report when
    a reader collects: an addition to a dict where a counter's `add` would take the SDK's
    measurement path (attributes cleaned, copied and hashed) on every item.

    Each batch adds into a tally of its own, without a lock on the request path; an ended
    batch's tally is folded into `ended`, under the lock a collection takes too, so the
    totals only ever grow."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended = _Tally()
        self.running: dict[int, _Tally] = {}
        """By `id()`: tallies compare equal by content."""

    def tally(self) -> _Tally:
        found = _Tally()
        with self.lock:
            self.running[id(found)] = found
        return found

    def end(self, tally: _Tally) -> None:
        with self.lock:
            del self.running[id(tally)]
            for key, amount in tally.items():
                self.ended.add(key, amount)

    def observer(self, name: str) -> Callable[[CallbackOptions], list[Observation]]:
        """The callback of the observable counter `name`."""

        def observe(options: CallbackOptions) -> list[Observation]:
            found = _Tally()
            with self.lock:
                for tally in (self.ended, *self.running.values()):
                    for key, amount in tally.copy().items():  # copy(): atomic under the GIL
                        if key[0] == name:
                            found.add(key, amount)
            return [Observation(amount, dict(key[1])) for key, amount in found.items()]

        return observe


def _key(name: str, attributes: Mapping[str, str]) -> Key:
    return name, frozenset(attributes.items())


FINISHED, FAILED = "genai_coroutines.items.finished", "genai_coroutines.items.failed"
RETRIES, RATE_LIMITED = "genai_coroutines.retries", "genai_coroutines.rate_limited"
COST = "genai_coroutines.cost.usd"
PAGES, CENTS = "genai_coroutines.datalab.pages", "genai_coroutines.datalab.cost.cents"
TOTALLED = {
    FINISHED: ("{item}", "Items ended"),
    FAILED: ("{item}", "Items ended without success, by error.type"),
    RETRIES: ("{retry}", "Counted retries of items"),
    RATE_LIMITED: (
        "{response}",
        "429 answers, by genai_coroutines.rate_limit.kind (rate, capacity, quota)",
    ),
    COST: ("{USD}", "Estimated US dollars of the tokens billed"),
    PAGES: ("{page}", "Datalab pages billed"),
    CENTS: ("{cent}", "Datalab's own cost, in cents"),
}
"""The counters kept as running totals: unit and description."""


class _Instruments:
    """The library's meter and tracer, and every instrument, created once. (From the API's
    proxies when no SDK is set yet: they forward to the SDK's once one is.)"""

    def __init__(self) -> None:
        meter = metrics.get_meter(SCOPE)
        self.tracer = trace.get_tracer(SCOPE)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens billed per answer, by gen_ai.token.type (input, output)",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of each request attempt, polls included",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.totals = _Totals()
        for name, (unit, description) in TOTALLED.items():
            meter.create_observable_counter(
                name, [self.totals.observer(name)], unit=unit, description=description
            )
        counter = meter.create_counter
        self.files = counter(
            "genai_coroutines.batch_api.files", "{file}", "Batch API input files, by status"
        )
        self.batches = counter(
            "genai_coroutines.batch_api.batches",
            "{batch}",
            "Batch API batches entering each status",
        )
        self.in_flight = meter.create_up_down_counter(
            "genai_coroutines.background.in_flight", "{response}", "Background responses polled"
        )
        self.rpm = meter.create_gauge(
            "genai_coroutines.limiter.requests_per_minute", "{request}", "Learned or given RPM"
        )
        self.tpm = meter.create_gauge(
            "genai_coroutines.limiter.tokens_per_minute", "{token}", "Learned or given TPM"
        )
        self.paused = counter(
            "genai_coroutines.limiter.pause", "s", "Seconds every worker on a key was paused"
        )


_instruments: _Instruments | None = None


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def sdk_installed() -> bool:
    """Whether an SDK (or any real) meter or tracer provider is set globally."""
    if not _API:
        return False
    meters = metrics.get_meter_provider()
    if not isinstance(meters, _NO_METERS):
        return True
    tracers = trace.get_tracer_provider()
    return not isinstance(tracers, trace.NoOpTracerProvider | trace.ProxyTracerProvider)


def start_batch(
    identity: Identity | None, pricing: tuple[PriceModel, ...]
) -> BatchTelemetry | None:
    """The telemetry of a batch starting now; None (nothing to do) without an SDK."""
    if identity is None or not sdk_installed():
        return None
    return BatchTelemetry(identity, pricing)


@dataclass(slots=True)
class _Operation:
    """What every attempt of one (operation, provider, model) shares, built once a batch:
    the SDK copies and hashes a measurement's attributes whatever they are, so the saving
    is the building of dicts and names, not the SDK's work."""

    name: str
    attributes: dict[str, str]
    counts_tokens: bool
    """False for a poll: its answer's tokens were counted with the item."""
    failed: dict[str, dict[str, str]]
    """`attributes` with each `error.type` seen."""
    rate_limited: dict[str, Key]
    """The 429 counter's key by kind."""

    def failed_with(self, error_type: str) -> dict[str, str]:
        found = self.failed.get(error_type)
        if found is None:
            found = self.failed[error_type] = {**self.attributes, "error.type": error_type}
        return found


class BatchTelemetry:
    """One batch's span and its items' measurements."""

    def __init__(self, identity: Identity, pricing: tuple[PriceModel, ...]) -> None:
        self.instruments = tools = _get()
        self.tracer = tools.tracer
        self.identity = identity
        self.attributes = identity.attributes()
        self.pricing = pricing
        """The summary's price models: an item's bill is read as the summary reads it, so
        the metrics and the summary agree."""
        self.span = tools.tracer.start_span("genai_coroutines batch", attributes=self.attributes)
        self.context = trace.set_span_in_context(self.span)
        self.traced = self.span.is_recording()
        """False when the batch's span is not recorded (no SDK tracer provider, or its
        sampler left this batch's trace out): then neither are its items' and attempts',
        which a parent-based sampler (the SDK's default) would drop, so none is made."""
        self.tally = tools.totals.tally()
        self._finished = _key(FINISHED, self.attributes)
        self._retries = _key(RETRIES, self.attributes)
        self._pages = _key(PAGES, self.attributes)
        self._cents = _key(CENTS, self.attributes)
        self._failed: dict[str, Key] = {}
        self._models: dict[str, tuple[dict[str, str], dict[str, str], Key]] = {}
        self._operations: dict[tuple[str, str, str | None], _Operation] = {}

    def item(self, index: int) -> ItemTelemetry:
        return ItemTelemetry(self, index)

    def attempt(
        self, provider: str, operation: str, model: str | None = None, resends: int = 0
    ) -> Attempt:
        """A request attempt of the batch itself (the Batch API's files and batches)."""
        return Attempt(self, self.context, provider, operation, model, resends)

    def operation(self, provider: str, operation: str, model: str | None) -> _Operation:
        found = self._operations.get((operation, provider, model))
        if found is None:
            attributes = {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider}
            if model:
                attributes["gen_ai.request.model"] = model
            found = self._operations[(operation, provider, model)] = _Operation(
                f"{operation} {model}" if model else operation,
                attributes,
                operation not in POLLS,
                {},
                {},
            )
        return found

    def finished(self, end: ItemEnd[Any]) -> None:
        """Count a finished item: outcome, retries, and (unless an earlier run or its twin
        paid for it) its tokens, cost, pages and cents."""
        tally, outcome = self.tally, end.outcome
        tally.add(self._finished, 1)
        if not isinstance(outcome, Answered):
            error = outcome.failure.error_type
            failed = self._failed.get(error)
            if failed is None:
                failed = self._failed[error] = _key(
                    FAILED, {**self.attributes, "error.type": error}
                )
            tally.add(failed, 1)
        attempts = outcome.attempts
        if attempts > 1:
            tally.add(self._retries, attempts - 1)
        if end.origin != "sent":
            return
        charges = Charges()
        for model in self.pricing:
            model.read(outcome, charges)
        if charges.billed:
            self._tokens(charges)
        if charges.pages:
            tally.add(self._pages, charges.pages)
        if charges.cost_cents:
            tally.add(self._cents, charges.cost_cents)

    def _tokens(self, charges: Charges) -> None:
        record = self.instruments.tokens.record
        for (pricer, model, share), (inputs, cached, outputs, _) in charges.billed.items():
            found = self._models.get(model)
            if found is None:
                found = self._models[model] = self._model(model)
            inputs_attributes, outputs_attributes, cost = found
            record(inputs, inputs_attributes)
            record(outputs, outputs_attributes)
            dollars = pricer.usd(model, share, inputs, cached, outputs)
            if dollars:
                self.tally.add(cost, dollars)

    def _model(self, model: str) -> tuple[dict[str, str], dict[str, str], Key]:
        """`gen_ai.client.token.usage`'s attributes for `model`'s input and output tokens,
        and the cost counter's key."""
        attributes = {
            "gen_ai.operation.name": CHAT,
            "gen_ai.provider.name": OPENAI,
            "gen_ai.request.model": model,
        }
        return (
            {**attributes, "gen_ai.token.type": "input"},
            {**attributes, "gen_ai.token.type": "output"},
            _key(COST, {"gen_ai.provider.name": OPENAI, "gen_ai.request.model": model}),
        )

    def end(self, succeeded: int, failed: int) -> None:
        self.instruments.totals.end(self.tally)
        self.span.set_attribute("genai_coroutines.items.succeeded", succeeded)
        self.span.set_attribute("genai_coroutines.items.failed", failed)
        self.span.end()


class ItemTelemetry:
    """One item's span, the parent of its attempts' (none when the batch's is not
    recorded)."""

    __slots__ = ("batch", "context", "span")

    def __init__(self, batch: BatchTelemetry, index: int) -> None:
        self.batch = batch
        self.span: Span | None = None
        self.context: Context = batch.context
        if batch.traced:
            self.span = batch.tracer.start_span(
                "genai_coroutines item",
                batch.context,
                attributes={"genai_coroutines.item.index": index},
            )
            self.context = trace.set_span_in_context(self.span)

    def attempt(
        self, provider: str, operation: str, model: str | None = None, resends: int = 0
    ) -> Attempt:
        """A request of this item starting now; `resends`: how many were sent before it."""
        return Attempt(self.batch, self.context, provider, operation, model, resends)

    def end(self, outcome: Outcome[Any] | None) -> None:
        """The item ended with `outcome` (None: it was cancelled)."""
        span = self.span
        if span is None:
            return
        if outcome is None:
            span.set_attribute("error.type", "cancelled")
            span.set_status(trace.StatusCode.ERROR)
        else:
            span.set_attribute("genai_coroutines.attempts", outcome.attempts)
            if not isinstance(outcome, Answered):
                span.set_attribute("error.type", outcome.failure.error_type)
                span.set_status(trace.StatusCode.ERROR)
        span.end()


class Attempt:
    """One request on the wire: its `gen_ai.client.operation.duration` and (when its batch
    is traced) its span.

    The span is made when the attempt ends, with every attribute at once and the start
    time taken when it began: one `start_span` instead of a span opened, then given its
    status, tokens and id one `set_attribute` (and one lock) at a time."""

    __slots__ = ("batch", "operation", "parent", "resends", "started")

    def __init__(
        self,
        batch: BatchTelemetry,
        parent: Context,
        provider: str,
        operation: str,
        model: str | None,
        resends: int,
    ) -> None:
        self.batch = batch
        self.parent = parent
        self.operation = batch.operation(provider, operation, model)
        self.resends = resends
        self.started = time.time_ns()

    def end(
        self, reply: Reply | Failure | None, outcome: object = None, response_id: str | None = None
    ) -> None:
        """The attempt got `reply` (a `Failure`: none), judged `outcome` (a `Failure`, or a
        `Success` whose value may carry a `response_id` and a `usage`); `response_id`: the
        id the API gave the work, when the caller knows it."""
        ended = time.time_ns()
        operation, batch = self.operation, self.batch
        failure = outcome if isinstance(outcome, Failure) else reply
        if isinstance(failure, Failure):
            measured = operation.failed_with(failure.error_type)
            status = reply.status if isinstance(reply, Reply) else None
            if (status or failure.status) == 429:
                self._rate_limited(failure.error_type)
        else:
            measured = operation.attributes
        batch.instruments.duration.record((ended - self.started) / 1e9, measured)
        if batch.traced:
            self._span(ended, reply, outcome, response_id)

    def _span(
        self, ended: int, reply: Reply | Failure | None, outcome: object, response_id: str | None
    ) -> None:
        operation = self.operation
        attributes: dict[str, str | int] = dict(operation.attributes)
        if self.resends:
            attributes["http.request.resend_count"] = self.resends
        failure = outcome if isinstance(outcome, Failure) else reply
        status = reply.status if isinstance(reply, Reply) else None
        if isinstance(failure, Failure):
            status = status or failure.status
            attributes["error.type"] = failure.error_type
        elif isinstance(outcome, Success):
            value = outcome.value
            response_id = response_id or getattr(value, "response_id", None)
            usage = getattr(value, "usage", None)
            if isinstance(usage, Mapping) and usage and operation.counts_tokens:
                attributes["gen_ai.usage.input_tokens"] = usage.get("input_tokens") or 0
                attributes["gen_ai.usage.output_tokens"] = usage.get("output_tokens") or 0
        if isinstance(response_id, str):
            attributes["gen_ai.response.id"] = response_id
        if status is not None:
            attributes["http.response.status_code"] = status
        span = self.batch.tracer.start_span(
            operation.name,
            self.parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=self.started,
        )
        if isinstance(failure, Failure):
            span.set_status(trace.StatusCode.ERROR)
        span.end(ended)

    def _rate_limited(self, error_type: str) -> None:
        kind = RATE_LIMIT_KINDS.get(error_type, "rate")
        keys = self.operation.rate_limited
        found = keys.get(kind)
        if found is None:
            found = keys[kind] = _key(
                RATE_LIMITED,
                {**self.operation.attributes, "genai_coroutines.rate_limit.kind": kind},
            )
        self.batch.tally.add(found, 1)


# Events outside any one item: rare, so they go through the instruments whatever the provider
# (the API's no-op ones when no SDK is set).


def batch_api_file(status: str) -> None:
    """A Batch API input file was uploaded ("uploaded") or could not be ("failed")."""
    if _API:
        _get().files.add(1, {"status": status})


def batch_api_status(status: str) -> None:
    """A Batch API batch was seen entering `status`."""
    if _API:
        _get().batches.add(1, {"status": status})


def background_in_flight(change: int) -> None:
    """Background responses being polled went up (1) or down (-1)."""
    if _API:
        _get().in_flight.add(change, {"gen_ai.provider.name": OPENAI})


def limit_learned(dimension: str, per_minute: float) -> None:
    """A rate limiter now paces at `per_minute` (`dimension`: "requests" or "tokens")."""
    if _API:
        tools = _get()
        (tools.rpm if dimension == "requests" else tools.tpm).set(per_minute)


def paused(seconds: float) -> None:
    """Every worker on a key is paused for `seconds` (after a 429)."""
    if _API:
        _get().paused.add(seconds)
