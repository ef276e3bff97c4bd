"""Prometheus metrics of one app, in a registry of its own (several apps can live in one process).

Request counts and latencies are recorded by the middleware; the banner and feedback paths count
what they wrote; the model version, swaps and reload failures are read from the holder at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from serving.model_holder import ModelHolder

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _HolderCollector(Collector):
    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def collect(self):
        h = self.holder
        cur = h.current
        info = InfoMetricFamily("recsys_model", "the model being served")
        if cur is not None:
            info.add_metric(
                [], {"version": cur.version, "n_products": str(cur.n_products), "source": cur.source}
            )
        yield info
        yield GaugeMetricFamily(
            "recsys_model_loaded", "1 once a model is being served", value=int(cur is not None)
        )
        yield GaugeMetricFamily(
            "recsys_model_pinned", "1 while pinned (not following the registry)", value=int(h.pinned)
        )
        yield CounterMetricFamily(
            "recsys_model_swaps", "models swapped in (reloads, pins, rollbacks)", value=h.swaps
        )
        yield CounterMetricFamily(
            "recsys_model_reload_failures", "failed polls/loads of the model source", value=h.reload_failures
        )


class ServingMetrics:
    """All metrics of one app, registered in ``self.registry``."""

    def __init__(self, holder: ModelHolder, temperature: float) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds", "request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.banners = Counter("recsys_banners_served", "banners served by mode", ["mode"], registry=r)
        self.impressions = Counter("recsys_impressions_written", "impressions durably written", registry=r)
        self.feedback = Counter(
            "recsys_feedback_events_written", "new feedback events durably written", registry=r
        )
        self.duplicates = Counter(
            "recsys_feedback_duplicates", "feedback events acknowledged as already stored", registry=r
        )
        self.rejected = Counter(
            "recsys_feedback_rejected", "feedback events refused, by reason", ["reason"], registry=r
        )
        self.fallbacks = Counter(
            "recsys_banner_fallbacks",
            "banners scored by a fallback model because the served one failed at inference",
            ["failed_version", "served_version"],
            registry=r,
        )
        self.auto_rollbacks = Counter(
            "recsys_model_auto_rollbacks",
            "served versions rolled back automatically after failing at inference batch after batch",
            ["failed_version", "served_version"],
            registry=r,
        )
        self.batch_size = Histogram(
            "recsys_scoring_batch_size", "banner requests scored together in one forward",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.temperature = Gauge(
            "recsys_exploration_temperature", "temperature of explore-mode sampling", registry=r
        )
        self.temperature.set(temperature)
        self.store_best_effort = Gauge(
            "recsys_event_store_best_effort",
            "1 when the event store runs with durability best-effort (acknowledged events may not survive "
            "a restart of its server), 0 when durable",
            registry=r,
        )
        self.registry_poll_failures = Counter(
            "recsys_registry_poll_failures",
            "polls of the model source (MLflow registry) that failed",
            registry=r,
        )
        self.registry_stale_since = Gauge(
            "recsys_registry_stale_since_seconds",
            "unix time since which the model source has not answered a poll (0 while it answers)",
            registry=r,
        )
        self._holder = holder
        holder.poll_listeners.append(self._on_poll)
        r.register(_HolderCollector(holder))
        self._children: dict = {}

    def _on_poll(self, ok: bool) -> None:
        if not ok:
            self.registry_poll_failures.inc()
        self.registry_stale_since.set(self._holder.stale_since or 0)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        pair = self._children.get(key)
        if pair is None:  # label lookups cost more than the increments: cache the children
            pair = self._children[key] = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )
        pair[0].inc()
        pair[1].observe(seconds)
