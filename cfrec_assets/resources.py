"""Resources: where data comes from and where artifacts go.

Endpoints and secrets are wired from environment variables with ``dg.EnvVar`` in
``definitions.py``, so the UI shows the variable's name rather than its value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from cfrec_assets.supabase_client import SupabaseResource
from cfrec_assets.supabase_postgres import SupabasePostgresResource

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

__all__ = [
    "GROUPLENS_BASE_URL",
    "CatalogSource",
    "DataStore",
    "MovieLensSource",
    "SupabasePostgresResource",
    "SupabaseResource",
]


class MovieLensSource(dg.ConfigurableResource):
    """Where the MovieLens archives are downloaded from (GroupLens, or a mirror)."""

    base_url: str = Field(
        default=GROUPLENS_BASE_URL,
        description="Base URL holding ml-100k.zip and ml-latest-small.zip: http(s):// or file://.",
    )
    timeout_seconds: float = Field(default=120.0, gt=0)


class DataStore(dg.ConfigurableResource):
    """The local folder holding download caches, intermediate tables and model versions."""

    data_dir: str = Field(default="data", description="Relative paths resolve against the working directory.")
    serving_dir_path: Optional[str] = Field(
        default=None,
        description="Where deployed_model promotes versions and the app loads them (default <data_dir>/serving).",
    )

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def movielens_dir(self) -> Path:
        return self.root / "movielens"

    @property
    def ratings_dir(self) -> Path:
        return self.root / "ratings"

    @property
    def ml100k_ratings_path(self) -> Path:
        return self.movielens_dir / "ml100k_ratings.parquet"

    @property
    def ml100k_items_path(self) -> Path:
        return self.movielens_dir / "ml100k_items.parquet"

    @property
    def tmdb_links_path(self) -> Path:
        return self.movielens_dir / "tmdb_links.parquet"

    @property
    def catalog_path(self) -> Path:
        return self.ratings_dir / "catalog_ids.json"

    @property
    def supabase_ratings_path(self) -> Path:
        return self.ratings_dir / "supabase_ratings.parquet"

    @property
    def combined_ratings_path(self) -> Path:
        return self.ratings_dir / "combined_ratings.parquet"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def serving_dir(self) -> Path:
        if self.serving_dir_path:
            return Path(self.serving_dir_path).expanduser().resolve()
        return self.root / "serving"


class CatalogSource(dg.ConfigurableResource):
    """The app's catalog of TMDB ids; with neither field set, no catalog filter is applied."""

    path: Optional[str] = Field(
        default=None, description="A .json list, a .csv with a tmdb_id column, or a .pkl/.joblib list or int array."
    )
    supabase_table: Optional[str] = Field(
        default=None, description="Read the catalog from this Supabase table instead (needs SUPABASE_URL/KEY)."
    )
    supabase_column: str = "tmdb_id"
