"""The model being served, its hot reload from the registry, pinning and rollback.

Requests read ``holder.current`` once and use that ``LoadedModel`` for the whole request (one
attribute read, atomic under the GIL); a swap only replaces the reference, so a request in flight
finishes on the model it took and no request ever sees a half-loaded model. Loading happens on the
poller thread (or the admin's), never on the request path.

Sources say which version they point at now and load a given version:

- ``RegistrySource``: an MLflow registered model followed at an alias (``models:/name@champion``),
  or fixed at a version (``models:/name/3``); loads the torch weights stored in the pyfunc model's directory (the
  pt2 model for versions logged before it);
- ``FileSource``: a ``save_policy`` file; its version is a hash of the file's bytes, so rewriting the
  file is a new version.

While the source cannot be reached (MLflow down), the poller keeps serving the current model and keeps
polling; ``stale_since`` holds when the first failed poll since the last good one happened (``/readyz``
shows it, ``/metrics`` counts failed polls), and the next good poll clears it.

Pin and rollback stop the poller from following the source (otherwise it would undo them at the
next poll) until ``unpin``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from recsys_rl.records import BANNER_SIZE, HISTORY_LEN, PAD

log = logging.getLogger("serving.model")

Logits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Candidates = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
"""(viewed, history, user_features) -> (ids (B, M), logits (B, M)): a large-catalogue policy's
candidates and their logits, from the index built with (and swapped together with) the model."""


class UnknownVersion(LookupError):
    """The source has no such version."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A servable policy: ``logits(viewed (B,), history (B, H), user_features (B, F) | None) -> (B, N)``."""

    version: str
    n_products: int
    logits: Logits
    n_user_features: int = 0
    source: str = ""
    loaded_at: float = field(default_factory=time.time)
    candidates: Candidates | None = None  # set for a policy that is defined over its top-M candidates
    banner_size: int = BANNER_SIZE  # K: the most products a banner of this model holds
    categorical_vocab: tuple = ()  # per categorical user feature, its known values (codes = index + 1)


def probe_n_products(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> int:
    """Catalogue size of a logits model, read off one forward of two dummy contexts (also warms it up)."""
    viewed = torch.zeros(2, dtype=torch.long)
    history = torch.full((2, HISTORY_LEN), PAD, dtype=torch.long)
    with torch.inference_mode():
        out = fn(viewed, history)
    if out.dim() != 2 or out.shape[0] != 2:
        raise ValueError(f"model: expected logits of shape (B, N), got {tuple(out.shape)}")
    return int(out.shape[1])


def from_policy(policy, version: str, source: str = "") -> LoadedModel:
    """Wrap an in-memory ``BannerPolicy`` (eval mode, no grad)."""
    from recsys_rl.records import ContextBatch

    policy = policy.eval().requires_grad_(False)
    if policy.n_user_features or getattr(policy, "categorical_vocab", None):

        def logits(viewed, history, user_features, user_categories=None):
            return policy.logits(ContextBatch(viewed, history, user_features, user_categories))
    else:

        def logits(viewed, history, user_features, user_categories=None):
            return policy(viewed, history)

    candidates = None
    if getattr(policy, "uses_candidates", False):
        policy.refresh_candidates()  # the index is built here, with the version, before it serves

        def candidates(viewed, history, user_features, user_categories=None):
            return policy.candidates_and_logits(ContextBatch(viewed, history, user_features, user_categories))

    return LoadedModel(
        version,
        policy.n_products,
        logits,
        policy.n_user_features,
        source,
        candidates=candidates,
        banner_size=getattr(policy, "banner_size", BANNER_SIZE),
        categorical_vocab=tuple(tuple(v) for v in getattr(policy, "categorical_vocab", None) or ()),
    )


def from_logits_module(module, version: str, source: str = "") -> LoadedModel:
    """Wrap a callable ``(viewed, history) -> logits`` such as MLflow's pt2 model."""

    def logits(viewed, history, user_features):
        return module(viewed, history)

    return LoadedModel(version, probe_n_products(module), logits, 0, source)


class ModelSource(Protocol):
    name: str

    def target_version(self) -> str:
        """The version the source points at now (what the poller should serve)."""
        ...

    def load(self, version: str) -> LoadedModel:
        """Load ``version``; UnknownVersion if there is none."""
        ...

    def available(self) -> list[str]:
        """Versions that could be pinned."""
        ...

    def normalise(self, version: str) -> str:
        """The canonical spelling of a version string given by a person."""
        ...


class RegistrySource:
    """A registered MLflow model, followed at ``alias`` or fixed at ``version``."""

    def __init__(self, name: str, *, alias: str | None = None, version: str | None = None, tracking_uri: str):
        if (alias is None) == (version is None):
            raise ValueError("RegistrySource: give exactly one of alias and version")
        self.name, self.alias, self.fixed, self.tracking_uri = name, alias, version, tracking_uri
        self._client_ = None

    @property
    def _client(self):
        """Made on first use (on the poller thread): building the app touches no registry."""
        if self._client_ is None:
            import os

            import mlflow

            # a poll that fails should fail fast and be retried at the next poll: MLflow's default
            # retries with backoff hold one failing call for minutes (measured: 247 s); settable
            for var, value in (
                ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
            ):
                os.environ.setdefault(var, value)

            self._client_ = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client_

    @classmethod
    def from_uri(cls, uri: str, tracking_uri: str) -> RegistrySource:
        """'models:/name@alias' or 'models:/name/version'."""
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            if name and alias and "/" not in name:
                return cls(name, alias=alias, tracking_uri=tracking_uri)
        elif rest.count("/") == 1:
            name, version = rest.split("/")
            if name and version.isdigit():
                return cls(name, version=version, tracking_uri=tracking_uri)
        raise ValueError(
            f"model_uri: expected 'models:/<name>@<alias>' or 'models:/<name>/<version>', got {uri!r}"
        )

    def _tag(self, version: str) -> str:
        return f"{self.name}/{version}"

    def normalise(self, version: str) -> str:
        v = version.strip().removeprefix(f"{self.name}/")
        if not v.isdigit():
            raise UnknownVersion(f"version: expected a version number of {self.name!r}, got {version!r}")
        return self._tag(str(int(v)))

    def target_version(self) -> str:
        if self.fixed is not None:
            return self._tag(self.fixed)
        return self._tag(self._client.get_model_version_by_alias(self.name, self.alias).version)

    def available(self) -> list[str]:
        found = self._client.search_model_versions(f"name='{self.name}'")
        return [self._tag(v) for v in sorted((int(m.version) for m in found), reverse=True)]

    def load(self, version: str) -> LoadedModel:
        import mlflow
        from mlflow.exceptions import MlflowException

        from recsys_rl.mlflow_model import download_weights
        from recsys_rl.policy import load_policy

        tag = self.normalise(version)
        number = tag.rsplit("/", 1)[1]
        try:
            where = self._client.get_model_version_download_uri(self.name, number)
        except MlflowException as exc:
            raise UnknownVersion(f"version: {self.name!r} has no version {number}") from exc
        uri = f"models:/{self.name}/{number}"
        # Download by the version's storage location with our tracking URI: a models:/ URI would be
        # resolved against the process-wide registry URI, not this source's. Only MLmodel and the
        # torch weights are fetched (the fast path: no pandas, no pyfunc wrapper on the request path).
        with tempfile.TemporaryDirectory(prefix="recsys-serve-") as tmp:
            weights = download_weights(where, tmp, self.tracking_uri)
            if weights is not None:
                return from_policy(load_policy(weights), tag, uri)
            # a version logged before the pyfunc model (pytorch flavour, pt2 format only)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=where, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            module = mlflow.pytorch.load_model(local)
        return from_logits_module(module, tag, uri)

    def __repr__(self) -> str:
        at = f"@{self.alias}" if self.alias else f"/{self.fixed}"
        return f"RegistrySource(models:/{self.name}{at}, {self.tracking_uri})"


class FileSource:
    """A policy file written by ``save_policy``; a new file content is a new version."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self._stat: tuple[int, int] | None = None
        self._version: str | None = None

    def normalise(self, version: str) -> str:
        return version.strip()

    def target_version(self) -> str:
        st = self.path.stat()  # FileNotFoundError names the path
        key = (st.st_mtime_ns, st.st_size)
        if key != self._stat:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
            self._stat, self._version = key, f"file:{self.name}@{digest}"
        return self._version

    def available(self) -> list[str]:
        return [self.target_version()]

    def load(self, version: str) -> LoadedModel:
        from recsys_rl.policy import load_policy

        if version != self.target_version():
            raise UnknownVersion(f"version: {self.path} now holds {self.target_version()}, not {version!r}")
        return from_policy(load_policy(self.path), version, str(self.path))

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"


class ModelHolder:
    """The current model, previous ones for rollback, and a poller that follows the source.

    ``current`` is read lock-free by requests. Control operations (poll, pin, rollback, unpin) are
    serialised by one lock so a poll never undoes a pin that raced with it.
    """

    def __init__(
        self,
        source: ModelSource | None = None,
        *,
        model: LoadedModel | None = None,
        reload_interval_s: float = 30.0,
        keep: int = 3,
    ) -> None:
        self.source = source
        self.reload_interval_s = reload_interval_s
        self._current: LoadedModel | None = None
        self._history: deque[LoadedModel] = deque(maxlen=keep)
        self._control = threading.RLock()
        self._swap_lock = threading.Lock()
        self.pinned = False
        self.swaps = 0
        self.reload_failures = 0
        self.last_error: str | None = None
        self.stale_since: float | None = None  # unix time of the first failed poll since the last good one
        self.last_good_poll: float | None = None
        self.poll_listeners: list[Callable[[bool], None]] = []  # called after each poll with its success
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if model is not None:
            self.swap(model)

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on; the one it replaces is kept for rollback. Returns that one."""
        if not isinstance(model, LoadedModel):
            raise TypeError(f"swap: expected a LoadedModel, got {type(model).__name__}")
        with self._swap_lock:
            prev = self._current
            if prev is not None and prev.version != model.version:
                self._forget(prev.version)
                self._history.append(prev)
            self._current = model
            self.swaps += 1
        log.info("serving model %s", model.version)
        return prev

    def _forget(self, version: str) -> None:
        for m in [m for m in self._history if m.version == version]:
            self._history.remove(m)

    def previous(self) -> list[LoadedModel]:
        """The models kept for rollback, most recent first (the fallbacks of a failing model)."""
        return list(reversed(self._history))

    def history(self) -> list[str]:
        """Versions available for rollback, most recent first."""
        return [m.version for m in reversed(self._history)]

    def refresh(self) -> bool:
        """One poll: load and serve the source's target version if it changed (not while pinned)."""
        if self.source is None:
            return False
        with self._control:
            if self.pinned:
                return False
            target = self.source.target_version()
            cur = self._current
            if cur is not None and cur.version == target:
                return False
            self.swap(self.source.load(target))
            return True

    def pin(self, version: str) -> LoadedModel:
        """Serve exactly ``version`` (from memory if it was served recently, else from the source) and
        stop following the source."""
        with self._control:
            if self.source is None:
                raise UnknownVersion("version: this server has no model source to load versions from")
            version = self.source.normalise(version)
            cur = self._current
            if cur is None or cur.version != version:
                kept = [m for m in self._history if m.version == version]
                self.swap(kept[-1] if kept else self.source.load(version))
            self.pinned = True
            return self._current

    def rollback(self) -> LoadedModel:
        """Go back to the previously served version and stay there (pinned). The version rolled back
        from is dropped from the history, so repeated rollbacks walk further back."""
        with self._control, self._swap_lock:
            if not self._history:
                raise UnknownVersion("rollback: no previous version to roll back to")
            prev = self._history.pop()
            self._current = prev
            self.swaps += 1
            self.pinned = True
        log.warning("rolled back to model %s", prev.version)
        return prev

    def demote(self, failed: str, to: LoadedModel) -> bool:
        """Serve ``to`` instead of ``failed`` and pin it, if ``failed`` is still the current version (the
        automatic rollback of a model that keeps failing at inference). ``failed`` leaves the history,
        so it is not offered as a fallback either; an operator's ``unpin`` follows the source again."""
        with self._control:
            cur = self._current
            if cur is None or cur.version != failed or to.version == failed:
                return False
            self.swap(to)
            self._forget(failed)
            self.pinned = True
        log.error(
            "model %s failed at inference batch after batch: rolled back to %s and pinned", failed, to.version
        )
        return True

    def unpin(self) -> bool:
        """Follow the source again; polls it at once. Returns whether the model changed."""
        with self._control:
            self.pinned = False
            return self.refresh()

    def start(self) -> None:
        """Start the poller thread: loads the first model (retrying every second until it succeeds),
        then polls every ``reload_interval_s`` (never again if that is 0)."""
        if self.source is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the current model whatever the source does
                self.reload_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.stale_since is None:
                    self.stale_since = time.time()
                log.warning("model reload from %r failed: %s", self.source, self.last_error)
                ok = False
            else:
                if self.stale_since is not None:
                    log.warning(
                        "model source %r reachable again (stale for %.1f s)",
                        self.source,
                        time.time() - self.stale_since,
                    )
                self.last_error, self.stale_since, self.last_good_poll = None, None, time.time()
                ok = True
            for listener in self.poll_listeners:
                listener(ok)
            if self._current is None:
                wait = min(self.reload_interval_s or 1.0, 1.0)
            elif self.reload_interval_s == 0:
                return
            else:
                wait = self.reload_interval_s
            self._stop.wait(wait)
