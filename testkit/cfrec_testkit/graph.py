"""Running the real asset graph (assets + checks) against a fixture mirror and a temp data dir."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.resources import CatalogSource, DataStore, MovieLensSource, build_resources
from cfrec_assets.defs.supabase_io import RatingsReader, SupabaseResource
from cfrec_testkit.movielens_fixtures import MovieLensFixture, write_movielens_fixture


@dataclass
class GraphEnv:
    """A fixture mirror, a data dir and the resources that point at them."""

    mirror: MovieLensFixture
    data_dir: Path
    supabase: RatingsReader
    catalog: CatalogSource

    @property
    def store(self) -> DataStore:
        return DataStore(data_dir=str(self.data_dir))

    @property
    def serving_dir(self) -> Path:
        return self.store.serving_dir

    def resources(self) -> dict[str, Any]:
        """``definitions``' wiring, pointed at the fixture mirror and the temp data dir (never at
        the environment's: every resource is overridden)."""
        return build_resources(
            {},
            io_manager=LocalIOManager(data_dir=str(self.data_dir)),
            movielens=MovieLensSource(base_url=self.mirror.root.as_uri() + "/"),
            store=self.store,
            catalog=self.catalog,
            supabase=self.supabase,
        )

    def fixture_check_config(self) -> dict:
        """The fixture is not the official release: tell the shape and coverage checks so."""
        ratings = self.mirror.ratings
        return {
            "ml100k_raw_ml100k_is_official_release": {
                "config": {
                    "ratings": len(ratings),
                    "users": int(ratings["user_id"].nunique()),
                    "items": len(self.mirror.expected),
                }
            },
            "tmdb_links_tmdb_mapping_coverage": {"config": {"min_item_coverage": 0.5, "min_rating_coverage": 0.5}},
            "combined_ratings_combined_ratings_are_valid": {"config": {"min_ratings": 100, "min_users": 5}},
            # ratings drawn from a noisy latent model, on 60 users: the real-data ceiling is too tight
            "cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 1.5}},
        }

    def materialize(
        self,
        instance: dg.DagsterInstance,
        selection: list[str] | None = None,
        ops: dict | None = None,
        raise_on_error: bool = False,
        resources: dict[str, Any] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``selection`` (asset names, with their checks; default: everything but the study);
        ``resources`` replace single resources of :meth:`resources`."""
        ops = {**self.fixture_check_config(), **(ops or {})}
        if selection is not None:  # Dagster rejects config for steps that are not in the run
            ops = {op: c for op, c in ops.items() if any(op == a or op.startswith(f"{a}_") for a in selection)}
        return dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection if selection is not None else WITHOUT_TUNING,
            instance=instance,
            resources={**self.resources(), **(resources or {})},
            run_config={"ops": ops},
            raise_on_error=raise_on_error,
        )


WITHOUT_TUNING = dg.AssetSelection.all() - dg.AssetSelection.groups("tuning")
UP_TO_COMBINED = [
    "ml100k_raw",
    "ml_latest_raw",
    "tmdb_links",
    "movie_titles",
    "catalog_ids",
    "supabase_ratings",
    "combined_ratings",
]
"""Everything ``combined_ratings`` needs, and itself."""
"""What ``train_and_deploy`` runs: the study has its own job and tests."""


def make_graph_env(tmp_path: Path, **fixture_kwargs) -> GraphEnv:
    kwargs = {"n_users": 60, "n_items": 80, "n_ratings": 2400, "seed": 3, **fixture_kwargs}
    return GraphEnv(
        mirror=write_movielens_fixture(tmp_path / "mirror", **kwargs),
        data_dir=tmp_path / "data",
        supabase=SupabaseResource(),
        catalog=CatalogSource(),
    )


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (relative path -> digest): byte-for-byte comparison."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Step key -> the failure's message and its causes, joined."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error, parts = event.event_specific_data.error, []
            while error is not None:
                parts.append(error.message.strip())
                error = error.cause
            out[event.step_key] = " <- ".join(parts)
    return out
