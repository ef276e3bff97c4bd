"""Served exposure concentration on /metrics: how unequally the served banners spread attention.

Every served banner adds each position's default examination probability (``POSITION_BIAS_CURVE``)
to its products' exposure, kept per product in one array the size of the catalogue. At scrape time:
the exposure Gini over the whole catalogue, the number of products ever exposed, and the share of
exposure the most-exposed 1% of the catalogue took. Counted from this process's start (per worker
under ``--workers N``, each labelled by pid).
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recsys_rl.records import POSITION_BIAS_CURVE

EXAMINATION = np.asarray(POSITION_BIAS_CURVE, dtype=np.float64)
TOP_SHARE = 0.01


class ServedExposure:
    def __init__(self) -> None:
        self.exposure = np.zeros(0, dtype=np.float64)

    def observe(self, banners: list, n_products: int) -> None:
        """Add the examination-weighted exposure of served banners (sequences of product ids)."""
        ids = np.fromiter((j for b in banners for j in b), dtype=np.int64)
        weights = np.concatenate([EXAMINATION[: len(b)] for b in banners])
        n = max(n_products, int(ids.max()) + 1 if len(ids) else 0)
        if len(self.exposure) < n:
            self.exposure = np.concatenate([self.exposure, np.zeros(n - len(self.exposure))])
        np.add.at(self.exposure, ids, weights)

    def figures(self) -> dict[str, float]:
        x = self.exposure
        n = len(x)
        if n == 0 or x.sum() <= 0:
            return {"gini": 0.0, "products": 0.0, "top_share": 0.0}
        s = np.sort(x)
        i = np.arange(1, n + 1)
        top = max(1, int(round(TOP_SHARE * n)))
        return {
            "gini": float(((2 * i - n - 1) * s).sum() / (n * s.sum())),
            "products": float((x > 0).sum()),
            "top_share": float(s[-top:].sum() / s.sum()),
        }


HELP = {
    "gini": "Gini of served examination-weighted exposure over the catalogue (0 equal, 1 one product)",
    "products": "products shown in at least one served banner",
    "top_share": "share of served exposure taken by the most-exposed 1% of the catalogue",
}


class ExposureCollector(Collector):
    """Single-process /metrics: the figures read at scrape time."""

    def __init__(self, exposure: ServedExposure) -> None:
        self.exposure = exposure

    def collect(self):
        for key, value in self.exposure.figures().items():
            yield GaugeMetricFamily(f"recsys_served_exposure_{key}", HELP[key], value=value)


class ExposureSync:
    """Multiprocess /metrics: each worker's figures as live gauges (labelled by pid), set on scrape."""

    def __init__(self, exposure: ServedExposure, registry) -> None:
        self.exposure = exposure
        self.gauges = {
            k: Gauge(f"recsys_served_exposure_{k}", h, registry=registry, multiprocess_mode="liveall")
            for k, h in HELP.items()
        }

    def sync(self) -> None:
        for key, value in self.exposure.figures().items():
            self.gauges[key].set(value)
