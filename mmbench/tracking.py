"""Optional experiment tracking: mirror each run into MLflow (``mmbench run --tracker mlflow``).

Records stay the source of truth; a tracker is a view for people who browse runs in a tracking UI.
Each run becomes one MLflow run named by its run id, in the experiment named after the protocol
(``mmbench`` for ad-hoc grids), tagged with ``dataset``, ``method``, ``cell`` (train availability),
``test_cell``, ``seed``, ``training_id`` and ``protocol``; it receives the per-epoch training losses,
validation metrics and learning rate while it trains (step = epoch, counted across stages), then
the test metrics (overall and per missing pattern) and the record's status. A run evaluated from a
saved training (:mod:`mmbench.checkpoint`) gets its epochs from the record's curves.

The default store is a local SQLite file, ``<output_dir>/mlflow.db`` (``--tracker-uri`` or
``MLFLOW_TRACKING_URI`` choose another: ``http://host:5000``, ``file:...``). Browse it with
``mlflow ui --backend-store-uri sqlite:///results/mlflow.db``. Install with
``pip install 'mmbench[mlflow]'``.

A tracker never fails a run: its first error (MLflow missing, a locked database, a server that does
not answer) prints one warning and turns the tracker off for the rest of the process.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

TRACKERS = ("mlflow",)
log = logging.getLogger("mmbench.tracking")


def default_uri(output_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store beside the records."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env or f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"


def make_tracker(name: str | None, uri: str | None, output_dir: str | Path) -> MLflowTracker | None:
    """The tracker called ``name`` (None: no tracking)."""
    if name is None:
        return None
    if name not in TRACKERS:
        raise ConfigError(f"--tracker {name!r}: expected one of {', '.join(TRACKERS)}")
    return MLflowTracker(uri or default_uri(output_dir))


class _NullHandle:
    """What a disabled tracker hands out: every call does nothing."""

    def epoch(self, row: dict[str, Any]) -> None:
        """Ignore an epoch."""

    def finish(self, record: Any) -> None:
        """Ignore the end of a run."""

    def abort(self) -> None:
        """Ignore an aborted run."""


class MLflowTracker:
    """Mirrors runs into an MLflow tracking store; disabled (with one warning) at its first error."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.disabled = False
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    def _fail(self, exc: BaseException) -> None:
        if not self.disabled:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("tracker mlflow (%s) is off for this process: %s; the records are unaffected",
                        self.uri, detail[:300])
        self.disabled = True

    def client(self) -> Any:
        """The MLflow client (imported on first use)."""
        if self._client is None:
            try:
                from mlflow.tracking import MlflowClient
            except ImportError:
                raise ConfigError("--tracker mlflow needs MLflow: pip install 'mmbench[mlflow]'") from None
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            client = self.client()
            exp = client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self._experiments[name] = client.create_experiment(name)
                except Exception:  # noqa: BLE001 - another worker created it first
                    exp = client.get_experiment_by_name(name)
                    if exp is None:
                        raise
                    self._experiments[name] = exp.experiment_id
            else:
                self._experiments[name] = exp.experiment_id
        return self._experiments[name]

    def start(self, spec: Any, protocol: str | None) -> _RunHandle | _NullHandle:
        """Open the MLflow run of ``spec``."""
        if self.disabled:
            return _NullHandle()
        try:
            exp = self._experiment(protocol or "mmbench")
            tags = {"dataset": spec.dataset.name, "method": spec.label, "cell": spec.missing.label("train"),
                    "test_cell": spec.missing.label("test"), "seed": str(spec.train_seed),
                    "training_id": spec.training_id, "run_id": spec.run_id, "protocol": protocol or ""}
            run = self.client().create_run(exp, run_name=spec.run_id, tags=tags)
            return _RunHandle(self, run.info.run_id)
        except Exception as exc:  # noqa: BLE001 - a tracker never fails a run
            self._fail(exc)
            return _NullHandle()


def _metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in (values or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


class _RunHandle:
    """One open MLflow run."""

    def __init__(self, tracker: MLflowTracker, run_id: str) -> None:
        self.tracker, self.run_id, self.steps = tracker, run_id, 0

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.tracker.client().log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _guarded(self, fn: Any, *args: Any) -> None:
        if self.tracker.disabled:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker never fails a run
            self.tracker._fail(exc)

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one epoch's training losses, validation metrics and learning rate."""
        self._guarded(self._epoch, row)

    def _epoch(self, row: dict[str, Any]) -> None:
        self.steps += 1
        metrics = {**_metrics("train_loss/", row.get("train_loss", {})), **_metrics("val/", row.get("val", {})),
                   **_metrics("", {"lr": row.get("lr"), "epoch_seconds": row.get("seconds")})}
        self._log(metrics, self.steps)

    def finish(self, record: Any) -> None:
        """Log the test metrics (and the epochs, if none were logged live) and close the run."""
        self._guarded(self._finish, record)

    def _finish(self, record: Any) -> None:
        if self.steps == 0:
            for row in record.curves:
                self._epoch(row)
        m = record.metrics
        metrics = {**_metrics("test/", m.test)}
        for pattern, values in m.test_by_pattern.items():
            metrics.update(_metrics(f"test_{pattern}/", values))
        if m.regret:
            metrics.update(_metrics("regret/", m.regret))
        if record.best_epoch is not None:
            metrics["best_epoch"] = float(record.best_epoch)
        self._log(metrics, self.steps)
        client = self.tracker.client()
        if record.error:
            client.set_tag(self.run_id, "error", record.error[:5000])
        client.set_terminated(self.run_id, status="FINISHED" if record.ok else "FAILED")

    def abort(self) -> None:
        """Close the run as killed (bad input stopped it before any record)."""
        self._guarded(lambda: self.tracker.client().set_terminated(self.run_id, status="KILLED"))
