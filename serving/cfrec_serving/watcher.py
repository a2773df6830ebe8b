"""Hot reload for the app: re-read the serving manifest at an interval and swap models atomically.

    watcher = DeployedModelWatcher("data/serving", interval=30).start()
    watcher.model.recommend("user-uuid", 10)   # take .model once per request

The current model is one attribute, replaced in a single assignment once a new version has
loaded and verified completely, so a request that took ``watcher.model`` keeps a consistent
model to the end. A new version that fails to load is refused (logged, remembered) and the old
one keeps serving; it is retried only when the manifest changes again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class DeployedModelWatcher:
    """Serve ``target``'s current model and follow its manifest every ``interval`` seconds.

    ``load`` builds a model from the target and ``probe`` returns the version the manifest points
    at (cheap: the manifest only); both default to :mod:`cfrec_serving.loader`'s loaders.
    """

    def __init__(
        self,
        target: Any,
        *,
        interval: float = 30.0,
        load: Callable[[Any], Any] | None = None,
        probe: Callable[[Any], str | None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        from cfrec_serving.loader import current_version, load_deployed

        self.target = target
        self.interval = float(interval)
        self._load = load or load_deployed
        self._probe = probe or current_version
        self._model: Any = None
        self._refused: str | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time (check_now may also be called by hand)

    @property
    def model(self) -> Any:
        """The model serving now; raises until the first successful load."""
        model = self._model
        if model is None:
            raise RuntimeError("DeployedModelWatcher has no model yet: call start() first")
        return model

    @property
    def version(self) -> str | None:
        return None if self._model is None else self._model.version

    def start(self) -> DeployedModelWatcher:
        """Load the current model (errors propagate: an app should not start without one), then
        poll in a daemon thread."""
        with self._lock:
            self._model = self._load(self.target)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cfrec-model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> DeployedModelWatcher:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check_now(self) -> bool:
        """Reload if the manifest points at another version; True when the model was swapped."""
        with self._lock:
            try:
                version = self._probe(self.target)
            except Exception as error:  # a flaky store must not kill the thread or the old model
                self._note_error(f"cannot read the manifest: {error}")
                return False
            if version is None or version == self.version or version == self._refused:
                return False
            try:
                model = self._load(self.target)
            except Exception as error:
                self._refused = version
                self._note_error(f"refused version {version}, still serving {self.version}: {error}")
                return False
            previous, self._model, self._refused, self.last_error = self.version, model, None, None
            log.info("cfrec model swapped: %s -> %s", previous, model.version)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_now()

    def _note_error(self, message: str) -> None:
        self.last_error = message
        log.warning("cfrec model watcher: %s", message)
