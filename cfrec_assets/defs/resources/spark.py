"""The Spark resource: which trainer ``svd_model`` uses by default, and where Spark runs.

Why a resource of our own rather than dagster-pyspark's ``PySparkResource``: that one builds a
classic session when a step starts (every ``svd_model`` run would start a JVM, Surprise runs
too), has no Spark Connect URL, and brings dagster-spark along. Why not Dagster Pipes
(spark-submit of a script): the factors must come back into this process to become the version's
``cf_model.npz``, checked and promoted like any other, and the code stays one package, so the
"code in the Dagster process, Spark elsewhere" way of Dagster's Spark Connect guide fits: the same
asset code runs on an embedded JVM, a standalone master or any Spark Connect server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from cfrec_assets.pipeline.memory import GiB, available_bytes
from cfrec_assets.pipeline.spark.session import DEFAULT_DRIVER_MEMORY, DEFAULT_MASTER, SparkSettings, spark_session
from cfrec_assets.settings import TRAINER

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TRAINERS = ("surprise", "spark", "auto")


class SparkResource(dg.ConfigurableResource):
    """Spark for ``svd_model``/``cv_metrics``: embedded by default, a cluster by URL."""

    trainer: str = Field(
        default=TRAINER.default,
        description="svd_model's trainer when its config names none: surprise, spark, or auto (Spark when "
        "Surprise would not fit in memory). CFREC_TRAINER.",
    )
    master: str = Field(
        default=DEFAULT_MASTER,
        description="local[*] (embedded in the step's process), local[n], or spark://host:port of a standalone "
        "cluster. CFREC_SPARK_MASTER.",
    )
    remote: str | None = Field(
        default=None,
        description="sc://host:port of a Spark Connect server (Databricks, EMR, Dataproc, Spark on Kubernetes). "
        "CFREC_SPARK_REMOTE; never shown beyond host and port.",
    )
    driver_memory: str = Field(
        default=DEFAULT_DRIVER_MEMORY,
        description="Heap of the embedded/driver JVM (local mode: all of Spark). CFREC_SPARK_DRIVER_MEMORY.",
    )
    connect_timeout_seconds: float = Field(default=30.0, gt=0)
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, applied last.")

    def chosen_trainer(self, requested: str | None) -> str:
        trainer = requested or self.trainer
        if trainer not in TRAINERS:
            raise ValueError(
                f"unknown trainer {trainer!r} (CFREC_TRAINER or svd_model config): use {', '.join(TRAINERS)}"
            )
        return trainer

    def trainer_for(self, requested: str | None, surprise_bytes: int, what: str, budget: int | None, log: Any) -> str:
        """The trainer to use; ``auto`` is ``spark`` when Surprise's fit (``surprise_bytes``, the
        memory pre-check's estimate for ``what``) would not fit ``budget`` (default: what is
        available now), with a log line either way."""
        trainer = self.chosen_trainer(requested)
        if trainer != "auto":
            return trainer
        available = budget if budget is not None else available_bytes()
        if available is not None and surprise_bytes > available:
            log.info(
                f"trainer auto: Surprise would need about {surprise_bytes / GiB:.1f} GiB for {what} but "
                f"{available / GiB:.1f} GiB is available: training with Spark ALS ({self.describe()})"
            )
            return "spark"
        log.info(f"trainer auto: Surprise fits ({surprise_bytes / GiB:.1f} GiB for {what}): training with Surprise")
        return "surprise"

    def staging_root(self, data_root: Path) -> Path | None:
        """Where the embedded Spark reads its input parquet from; None (Arrow batches) for a cluster,
        which cannot read this machine's disk."""
        if not self.settings().is_local:
            return None
        folder = data_root / "spark-staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def settings(self) -> SparkSettings:
        return SparkSettings(
            master=self.master,
            remote=self.remote or None,
            driver_memory=self.driver_memory,
            connect_timeout_seconds=self.connect_timeout_seconds,
            conf=dict(self.conf),
        )

    def describe(self) -> str:
        return self.settings().describe()

    @contextmanager
    def session(self) -> Iterator[SparkSession]:
        with spark_session(self.settings()) as session:
            yield session
