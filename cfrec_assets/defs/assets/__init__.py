"""The asset graph, one module per stage: movielens -> ratings -> model -> deployment."""

from cfrec_assets.defs.assets.deployment import deployed_model
from cfrec_assets.defs.assets.model import cv_metrics, svd_model
from cfrec_assets.defs.assets.movielens import ml100k_raw, ml_latest_raw, movie_titles, tmdb_links
from cfrec_assets.defs.assets.ratings import app_ratings_table, catalog_ids, combined_ratings, supabase_ratings
from cfrec_assets.defs.assets.recommendations import user_recommendations
from cfrec_assets.defs.assets.tuning import svd_tuning

ALL_ASSETS = [
    app_ratings_table,
    ml100k_raw,
    ml_latest_raw,
    tmdb_links,
    movie_titles,
    catalog_ids,
    supabase_ratings,
    combined_ratings,
    svd_tuning,
    svd_model,
    cv_metrics,
    deployed_model,
]

OPT_IN_ASSETS = [user_recommendations]
"""In the code location only when switched on (``definitions.assets_from_env``)."""
