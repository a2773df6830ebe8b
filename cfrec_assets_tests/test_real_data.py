"""The whole graph on the real MovieLens data from ../shared/datasets (skips where absent)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.resources import CatalogSource, DataStore, MovieLensSource, build_resources
from cfrec_assets.defs.supabase_io import SupabaseResource
from cfrec_serving.loader import load_deployed
from cfrec_testkit.graph import WITHOUT_TUNING, check_results, materialized, metadata
from cfrec_testkit.shared_data import real_movielens_or_skip

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    mirror = real_movielens_or_skip()
    data_dir = tmp_path_factory.mktemp("real") / "data"
    resources = build_resources(
        {},
        io_manager=LocalIOManager(data_dir=str(data_dir)),
        movielens=MovieLensSource(base_url=mirror.as_uri() + "/"),
        store=DataStore(data_dir=str(data_dir)),
        catalog=CatalogSource(),
        supabase=SupabaseResource(),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=WITHOUT_TUNING,  # the study has its own bench; this run trains the seed model
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        yield result, data_dir


def test_every_asset_and_check_succeeds(real_run) -> None:
    result, _ = real_run
    assert result.success
    every = {key.to_user_string() for asset in ALL_ASSETS if not isinstance(asset, dg.AssetSpec) for key in asset.keys}
    assert materialized(result) == every - {"svd_tuning"}
    assert all(check_results(result).values()), check_results(result)


def test_official_dataset_shape(real_run) -> None:
    raw = metadata(real_run[0], "ml100k_raw")
    assert (raw["ratings"], raw["users"], raw["items"]) == (100_000, 943, 1_682)


def test_ml_latest_small_release_and_its_links(real_run) -> None:
    result, _ = real_run
    raw = metadata(result, "ml_latest_raw")
    assert raw["release"] == "ml-latest-small"
    assert (raw["ratings"], raw["users"], raw["movies"]) == (100_836, 610, 9_742)
    assert raw["rating_link_coverage"] >= 0.99
    titles = metadata(result, "movie_titles")
    assert titles["from_ml_latest"] >= 9_600
    named = pd.read_parquet(titles["path"]).set_index("tmdb_id")
    assert (named.loc[862, "title"], named.loc[862, "year"]) == ("Toy Story", 1995)
    assert named.loc[629, "title"] == "The Usual Suspects"  # article first, as people write it


def test_mapping_targets_and_spot_checks(real_run) -> None:
    result, data_dir = real_run
    links = metadata(result, "tmdb_links")
    assert links["items_mapped"] >= 1_350 and links["ratings_mapped"] >= 98_000
    assert links["embedded_imdb_ids_honoured"] == links["embedded_imdb_ids_in_links"] > 0
    mapping = pd.read_parquet(links["path"]).set_index("ml100k_item_id")["tmdb_id"]
    # Toy Story, GoldenEye, Star Wars: the old id join mapped item 2 to Jumanji (tmdb 8844).
    assert (mapping[1], mapping[2], mapping[50]) == (862, 710, 11)


def test_training_table_and_cv_rmse_in_a_sane_band(real_run) -> None:
    result, _ = real_run
    combined = metadata(result, "combined_ratings")
    assert combined["users"] == 943 and 97_000 <= combined["ratings"] <= 98_600
    cv = metadata(result, "cv_metrics")
    # Surprise's SVD on ML-100K scores ~0.93-0.95; a global-mean predictor ~1.13.
    assert 0.90 <= cv["rmse_mean"] <= 0.98, cv["rmse_mean"]
    assert 0.70 <= cv["mae_mean"] <= 0.78
    assert 0.5 <= cv["ndcg_at_10_mean"] <= 1.0


def test_the_app_can_load_and_rank_with_the_deployed_model(real_run) -> None:
    _, data_dir = real_run
    model = load_deployed(DataStore(data_dir=str(data_dir)).serving_dir)
    recs = model.recommend("ml_196", n=10)
    assert len(recs.items) == 10 and recs.fallback is None
    assert model.predict("ml_196", 862).fallback is None
