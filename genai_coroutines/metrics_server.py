"""The CLI's `--metrics-port`: the job's metrics at `http://HOST:PORT/metrics` while it runs.

The library reports through the OpenTelemetry API only (`engine.telemetry`); this is the
one place that installs an SDK: a `MeterProvider` whose Prometheus reader the
`prometheus_client` server scrapes on each request, so the names follow Prometheus
conventions (`_total` counters, `_seconds` durations) without a naming table of our own.
It needs the `[prometheus]` extra. The server binds to 127.0.0.1 unless told otherwise:
a job's counts are nobody else's business by default. Port 0 takes a free port; the URL
is printed on stderr either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PORT_VARIABLE = "GENAI_COROUTINES_METRICS_PORT"
DEFAULT_HOST = "127.0.0.1"


class MetricsUnavailable(RuntimeError):
    """`--metrics-port` was asked for without the packages that serve it."""


def metrics_port(given: int | None, environ: os._Environ[str] | dict[str, str]) -> int | None:
    """The port to serve on: `given`, else `$GENAI_COROUTINES_METRICS_PORT`, else None."""
    if given is None:
        text = environ.get(PORT_VARIABLE, "").strip()
        if not text:
            return None
        try:
            given = int(text)
        except ValueError:
            raise ValueError(f"{PORT_VARIABLE}={text!r} is not a port number") from None
    if not 0 <= given <= 65535:
        raise ValueError(f"metrics port {given} is not between 0 and 65535")
    return given


@contextmanager
def serving(port: int | None, host: str = DEFAULT_HOST) -> Iterator[str | None]:
    """Serve the process's metrics on `host:port` until the block ends (nothing when `port`
    is None); yields the URL."""
    if port is None:
        yield None
        return
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise MetricsUnavailable(
            f"--metrics-port needs the prometheus extra ({exc.name} is missing): "
            "pip install 'genai-coroutines[prometheus]'"
        ) from None
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        provider.shutdown()
        raise MetricsUnavailable(f"cannot serve metrics on {host}:{port}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/metrics"
    print(f"metrics: {url}", file=sys.stderr, flush=True)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        provider.shutdown()
