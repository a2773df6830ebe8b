"""The app's catalog of TMDB ids, which training is restricted to."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, model_validator

from cfrec_assets.defs.supabase_io.table import check_identifier


class CatalogSource(dg.ConfigurableResource):
    """The app's catalog of TMDB ids; with neither field set, no catalog filter is applied."""

    path: str | None = Field(
        default=None, description="A .json list, a .csv with a tmdb_id column, or a .pkl/.joblib list or int array."
    )
    supabase_table: str | None = Field(
        default=None, description="Read the catalog from this Supabase table instead (needs SUPABASE_URL/KEY)."
    )
    supabase_column: str = "tmdb_id"

    @model_validator(mode="after")
    def _check_names(self) -> CatalogSource:
        if self.supabase_table:
            check_identifier(self.supabase_table, "catalog table", table=True)
        check_identifier(self.supabase_column, "catalog column")
        return self
