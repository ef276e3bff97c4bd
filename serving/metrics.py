"""Prometheus metrics of one app, in a registry of its own (several apps can live in one process).

Request counts and latencies are recorded by the middleware; the banner and feedback paths count
what they wrote; the model version, swaps and reload failures are read from the holder at scrape time.

Under ``recsys-rl serve --workers N`` the workers run in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before they start): every value lives in a per-process file and
``/metrics``, whichever worker answers, is the ``MultiProcessCollector``'s aggregate of all of them.
There the holder's state cannot be read at scrape time from the other workers, so each worker copies
it into metrics of its own (``HolderSync``: on each scrape and every ``SYNC_INTERVAL_S``): swaps and
reload failures as counters (summed over workers), loaded/pinned as gauges (``livemin``: 1 only when
every worker has a model; ``livemax``), the served version per worker (``liveall``, labelled by pid:
each worker hot-swaps on its own). Files of workers that died without cleaning up (SIGKILL) are
marked dead at the next scrape.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from serving.exposure import ExposureCollector, ExposureSync, ServedExposure
from serving.model_holder import ModelHolder

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL_S = 1.0


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


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


class HolderSync:
    """The holder's state as this worker's multiprocess metrics (see the module docstring)."""

    def __init__(self, holder: ModelHolder, registry: CollectorRegistry) -> None:
        self.holder = holder
        self.pid = os.getpid()
        self.swaps = Counter(
            "recsys_model_swaps", "models swapped in (reloads, pins, rollbacks)", registry=registry
        )
        self.failures = Counter(
            "recsys_model_reload_failures", "failed polls/loads of the model source", registry=registry
        )
        self.loaded = Gauge(
            "recsys_model_loaded",
            "1 once every worker serves a model",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.pinned = Gauge(
            "recsys_model_pinned",
            "1 while a worker is pinned (not following the registry)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.info = Gauge(
            "recsys_model_info",
            "the model each worker serves (1 for its current version)",
            ["version", "n_products", "source"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self._seen_swaps = self._seen_failures = 0
        self._labels: tuple | None = None

    def sync(self) -> None:
        h = self.holder
        swaps, failures = h.swaps, h.reload_failures
        if swaps > self._seen_swaps:
            self.swaps.inc(swaps - self._seen_swaps)
            self._seen_swaps = swaps
        if failures > self._seen_failures:
            self.failures.inc(failures - self._seen_failures)
            self._seen_failures = failures
        cur = h.current
        self.loaded.set(int(cur is not None))
        self.pinned.set(int(h.pinned))
        labels = None if cur is None else (cur.version, str(cur.n_products), cur.source)
        if labels != self._labels:
            if self._labels is not None:  # a multiprocess value cannot be removed from its file
                self.info.labels(*self._labels).set(0)
            if labels is not None:
                self.info.labels(*labels).set(1)
            self._labels = labels


def _mark_dead_workers(path: str) -> None:
    """Drop the live-gauge files of processes that are gone (a SIGKILLed worker never cleans up)."""
    pids = set()
    for name in os.listdir(path):
        if name.startswith("gauge_live") and name.endswith(".db"):
            pid = name.rsplit("_", 1)[-1][:-3]
            if pid.isdigit():
                pids.add(int(pid))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, another user's


class ServingMetrics:
    """All metrics of one app, registered in ``self.registry``; ``exposition()`` is what /metrics shows
    (this registry, or in multiprocess mode the aggregate of every worker's files)."""

    def __init__(self, holder: ModelHolder, temperature: float) -> None:
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "recsys_http_request_duration_seconds",
            "request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
            "recsys_scoring_batch_size",
            "banner requests scored together in one forward",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.temperature = Gauge(
            "recsys_exploration_temperature",
            "temperature of explore-mode sampling",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.temperature.set(temperature)
        self.store_best_effort = Gauge(
            "recsys_event_store_best_effort",
            "1 when the event store runs with durability best-effort (acknowledged events may not survive "
            "a restart of its server), 0 when durable",
            registry=r,
            multiprocess_mode="livemax",
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
            multiprocess_mode="livemax",
        )
        self._holder = holder
        holder.poll_listeners.append(self._on_poll)
        self._children: dict = {}
        self.holder_sync: HolderSync | None = None
        self.served_exposure = ServedExposure()
        self.exposure_sync: ExposureSync | None = None
        if self.multiprocess_dir is None:
            r.register(_HolderCollector(holder))
            r.register(ExposureCollector(self.served_exposure))
            self._exposition = r
        else:
            self.holder_sync = HolderSync(holder, r)
            self.exposure_sync = ExposureSync(self.served_exposure, r)
            self._exposition = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposition, path=self.multiprocess_dir)

    def exposition(self) -> CollectorRegistry:
        """The registry /metrics renders (brought up to date first in multiprocess mode)."""
        if self.holder_sync is not None:
            self.holder_sync.sync()
            self.exposure_sync.sync()
            _mark_dead_workers(self.multiprocess_dir)
        return self._exposition

    def worker_exit(self) -> None:
        """Multiprocess bookkeeping when this worker stops: its live gauges leave the aggregate."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def observe_banners(self, banners: list[list[int]]) -> None:
        """Served banners into the exposure figures (catalogue size: the served model's)."""
        cur = self._holder.current
        self.served_exposure.observe(banners, cur.n_products if cur is not None else 0)

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
