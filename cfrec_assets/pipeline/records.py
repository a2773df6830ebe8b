"""The typed values assets hand to each other (besides plain DataFrames).

Tables go through the IO manager as parquet; these records as JSON (never pickle), so every
field is a plain JSON value. A record names the run that produced it, which lets the deployment
gate look up the check results of exactly the materializations it is about to ship.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is heavy; the app's serving path never needs it
    import pandas as pd


@dataclass(frozen=True)
class MovieLens100K:
    """``ml100k_raw``: the parsed ratings (u.data) and items (u.item) of one archive."""

    ratings: pd.DataFrame
    items: pd.DataFrame


@dataclass(frozen=True)
class MovieLensLatest:
    """``ml_latest_raw``: ratings.csv, movies.csv and links.csv of one ml-latest-format release
    (ml-latest-small, ml-32m or ml-latest; which one is in the asset's metadata)."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    links: pd.DataFrame


@dataclass(frozen=True)
class Catalog:
    """``catalog_ids``: the TMDB ids training is restricted to (``filter`` False: no restriction)."""

    filter: bool
    source: str
    tmdb_ids: list[int]


@dataclass(frozen=True)
class ModelVersion:
    """``svd_model``: one trained version folder and what it was trained on."""

    version: str
    path: str
    run_id: str
    trained_at: str
    params: dict[str, Any]
    counts: dict[str, int]
    """ratings, real_ratings, users, movies."""
    files: dict[str, dict[str, Any]]
    """Artifact name -> {"sha256", "bytes"}, including the training table."""
    tuning_version: str | None = None
    """The ``svd_tuning`` result whose params trained it; None for the seed params."""

    def sha256(self, name: str) -> str:
        return self.files[name]["sha256"]


@dataclass(frozen=True)
class ModelMetrics:
    """``cv_metrics``: cross-validation of one model version."""

    version: str
    run_id: str
    n_folds: int
    summary: dict[str, float]
    """``<metric>_mean`` / ``<metric>_std`` for rmse, mae, precision_at_k, ndcg_at_k, fit_seconds."""
    real_ratings: int
    folds: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Deployment:
    """``deployed_model``: what the serving target serves after this materialization."""

    version: str
    action: str
    """``promote`` or ``rollback``."""
    target: str
    """The serving target, without credentials."""
    previous_version: str | None
    run_id: str
