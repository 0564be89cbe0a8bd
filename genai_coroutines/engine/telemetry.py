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

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .http import Reply
from .outcome import Answered, Failure, ItemEnd, Outcome, Success
from .pricing import Charges, PriceModel

try:
    from opentelemetry import metrics, trace

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
        counter = meter.create_counter
        self.finished = counter("genai_coroutines.items.finished", "{item}", "Items ended")
        self.failed = counter(
            "genai_coroutines.items.failed", "{item}", "Items ended without success, by error.type"
        )
        self.retries = counter("genai_coroutines.retries", "{retry}", "Counted retries of items")
        self.rate_limited = counter(
            "genai_coroutines.rate_limited",
            "{response}",
            "429 answers, by genai_coroutines.rate_limit.kind (rate, capacity, quota)",
        )
        self.cost = counter(
            "genai_coroutines.cost.usd", "{USD}", "Estimated US dollars of the tokens billed"
        )
        self.pages = counter("genai_coroutines.datalab.pages", "{page}", "Datalab pages billed")
        self.cents = counter(
            "genai_coroutines.datalab.cost.cents", "{cent}", "Datalab's own cost, in cents"
        )
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


class BatchTelemetry:
    """One batch's span and its items' measurements."""

    def __init__(self, identity: Identity, pricing: tuple[PriceModel, ...]) -> None:
        self.instruments = tools = _get()
        self.identity = identity
        self.attributes = identity.attributes()
        self.pricing = pricing
        """The summary's price models: what an item was billed is read as the summary reads
        it, so the metrics and the summary agree."""
        self.span = tools.tracer.start_span("genai_coroutines batch", attributes=self.attributes)
        self.context = trace.set_span_in_context(self.span)
        self._token_attributes: dict[tuple[str, str], dict[str, str]] = {}

    def item(self, index: int) -> ItemTelemetry:
        return ItemTelemetry(self, index)

    def attempt(
        self, provider: str, operation: str, model: str | None = None, resends: int = 0
    ) -> Attempt:
        """A request attempt of the batch itself (the Batch API's files and batches)."""
        return Attempt(self, self.context, provider, operation, model, resends)

    def finished(self, end: ItemEnd[Any]) -> None:
        """Count a finished item: outcome, retries, and (unless an earlier run or its twin
        paid for it) its tokens, cost, pages and cents."""
        tools, attributes, outcome = self.instruments, self.attributes, end.outcome
        tools.finished.add(1, attributes)
        if not isinstance(outcome, Answered):
            tools.failed.add(1, {**attributes, "error.type": outcome.failure.error_type})
        attempts = outcome.attempts
        if attempts > 1:
            tools.retries.add(attempts - 1, attributes)
        if end.origin != "sent":
            return
        charges = Charges()
        for model in self.pricing:
            model.read(outcome, charges)
        for (pricer, name, share), (inputs, cached, outputs, _) in charges.billed.items():
            tools.tokens.record(inputs, self._token_attributes_of(name, "input"))
            tools.tokens.record(outputs, self._token_attributes_of(name, "output"))
            dollars = pricer.usd(name, share, inputs, cached, outputs)
            if dollars:
                tools.cost.add(
                    dollars, {"gen_ai.provider.name": OPENAI, "gen_ai.request.model": name}
                )
        if charges.pages:
            tools.pages.add(charges.pages, attributes)
        if charges.cost_cents:
            tools.cents.add(charges.cost_cents, attributes)

    def _token_attributes_of(self, model: str, kind: str) -> dict[str, str]:
        found = self._token_attributes.get((model, kind))
        if found is None:
            found = self._token_attributes[(model, kind)] = {
                "gen_ai.operation.name": CHAT,
                "gen_ai.provider.name": OPENAI,
                "gen_ai.request.model": model,
                "gen_ai.token.type": kind,
            }
        return found

    def end(self, succeeded: int, failed: int) -> None:
        self.span.set_attribute("genai_coroutines.items.succeeded", succeeded)
        self.span.set_attribute("genai_coroutines.items.failed", failed)
        self.span.end()


class ItemTelemetry:
    """One item's span, the parent of its attempts'."""

    __slots__ = ("batch", "context", "span")

    def __init__(self, batch: BatchTelemetry, index: int) -> None:
        self.batch = batch
        self.span: Span = batch.instruments.tracer.start_span(
            "genai_coroutines item",
            batch.context,
            attributes={**batch.attributes, "genai_coroutines.item.index": index},
        )
        self.context: Context = trace.set_span_in_context(self.span)

    def attempt(
        self, provider: str, operation: str, model: str | None = None, resends: int = 0
    ) -> Attempt:
        """A request of this item starting now; `resends`: how many were sent before it."""
        return Attempt(self.batch, self.context, provider, operation, model, resends)

    def end(self, outcome: Outcome[Any] | None) -> None:
        """The item ended with `outcome` (None: it was cancelled)."""
        span = self.span
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
    """One request on the wire: its span and its `gen_ai.client.operation.duration`."""

    __slots__ = ("attributes", "batch", "span", "started")

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
        self.attributes = {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider}
        if model:
            self.attributes["gen_ai.request.model"] = model
        span_attributes: dict[str, str | int] = dict(self.attributes)
        if resends:
            span_attributes["http.request.resend_count"] = resends
        self.span = batch.instruments.tracer.start_span(
            f"{operation} {model}" if model else operation,
            parent,
            kind=trace.SpanKind.CLIENT,
            attributes=span_attributes,
        )
        self.started = time.perf_counter()

    def end(
        self, reply: Reply | Failure | None, outcome: object = None, response_id: str | None = None
    ) -> None:
        """The attempt got `reply` (a `Failure`: none), judged `outcome` (a `Failure`, or a
        `Success` whose value may carry a `response_id` and a `usage`); `response_id`: the
        id the API gave the work, when the caller knows it."""
        tools, span, attributes = self.batch.instruments, self.span, self.attributes
        failure = outcome if isinstance(outcome, Failure) else reply
        status = reply.status if isinstance(reply, Reply) else None
        if isinstance(failure, Failure):
            status = status or failure.status
            attributes = {**attributes, "error.type": failure.error_type}
            span.set_attribute("error.type", failure.error_type)
            span.set_status(trace.StatusCode.ERROR)
            if status == 429:
                kind = RATE_LIMIT_KINDS.get(failure.error_type, "rate")
                tools.rate_limited.add(
                    1, {**self.attributes, "genai_coroutines.rate_limit.kind": kind}
                )
        elif isinstance(outcome, Success):
            value = outcome.value
            response_id = response_id or getattr(value, "response_id", None)
            usage = getattr(value, "usage", None)
            if (
                isinstance(usage, Mapping)
                and usage
                and attributes["gen_ai.operation.name"] not in POLLS
            ):
                span.set_attribute("gen_ai.usage.input_tokens", usage.get("input_tokens") or 0)
                span.set_attribute("gen_ai.usage.output_tokens", usage.get("output_tokens") or 0)
        if isinstance(response_id, str):
            span.set_attribute("gen_ai.response.id", response_id)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        tools.duration.record(time.perf_counter() - self.started, attributes)
        span.end()


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
