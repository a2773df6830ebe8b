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
    (ml-latest-small, ml-32m or ml-latest; which one is in the asset's metadata), in snake_case
    columns. Tables stored before the parsers renamed the files' columns are read with them renamed."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    links: pd.DataFrame

    def __post_init__(self) -> None:
        for name in ("movies", "links"):
            frame = getattr(self, name)
            if set(LEGACY_COLUMNS) & set(frame.columns):
                object.__setattr__(self, name, frame.rename(columns=LEGACY_COLUMNS))


LEGACY_COLUMNS = {"movieId": "movie_id", "imdbId": "imdb_id", "tmdbId": "tmdb_id"}
"""links.csv's and movies.csv's own column names, as ``ml_latest_raw`` stored them until the
parsers returned snake_case; remove once no stored value is that old."""


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
    """ratings, real_ratings (the app's: ``schema.APP_RATINGS_COUNT``), users, movies."""
    files: dict[str, dict[str, Any]]
    """Artifact name -> {"sha256", "bytes"}, including the training table."""
    tuning_version: str | None = None
    """The ``svd_tuning`` result whose params trained it; None for the seed params."""
    trainer: str = "surprise"
    """``surprise`` (``params`` are SVD's) or ``spark`` (MLlib ALS: ``params`` are ``ALSParams``;
    the version ships ``cf_model.npz`` without the pickles)."""

    def sha256(self, name: str) -> str:
        return self.files[name]["sha256"]


@dataclass(frozen=True)
class ModelMetrics:
    """``cv_metrics``: cross-validation of one model version."""

    version: str
    run_id: str
    n_folds: int
    summary: dict[str, float]
    """``<metric>_mean`` / ``<metric>_std`` for rmse, mae, precision_at_<k>, ndcg_at_<k>, fit_seconds
    (``ranking.precision_at(k)``...)."""
    real_ratings: int
    """The app's ratings the version was trained on (the JSON field predates the name ``app``)."""
    folds: list[dict[str, float]] = field(default_factory=list)
    k: int = 10
    """The precision/NDCG cut-off (``cv_metrics`` k); records made before it was stored used 10."""


@dataclass(frozen=True)
class Deployment:
    """``deployed_model``: what the serving target serves after this materialization."""

    version: str
    action: str
    """``promote``, ``keep`` (the challenger lost: the champion stays) or ``rollback``."""
    target: str
    """The serving target, without credentials."""
    previous_version: str | None
    run_id: str
