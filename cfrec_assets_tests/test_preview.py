"""The Markdown preview of what a model recommends (deployed_model / cv_metrics metadata)."""

import pandas as pd

from cfrec_assets.pipeline.preview import NEW_USER, preview_users, recommendations_table
from cfrec_serving.loader import DeployedModel
from cfrec_testkit.models import make_ratings_frame, train_tiny_svd

TITLES = pd.DataFrame({"tmdb_id": [107, 114], "title": ["Toy Story", "A | B"], "year": [1995, 2001]})


def model_for(ratings: pd.DataFrame) -> DeployedModel:
    algo, trainset = train_tiny_svd(ratings)
    return DeployedModel(algo, trainset, {"version": "v-test"}, titles=TITLES)


def test_columns_are_movielens_app_and_new_users():
    ratings = make_ratings_frame()
    model = model_for(ratings)
    counts = ratings.groupby("user_id").size()
    ml, app = counts[counts.index.str.startswith("ml_")], counts[~counts.index.str.startswith("ml_")]
    users = [user for user, _ in preview_users(model)]
    assert users[0] == max(ml.index, key=lambda u: (ml[u], -int(u[3:])))  # most active, ties by id
    assert users[2] == sorted(app.index, key=lambda u: (-app[u], u))[0]
    assert users[-1] == NEW_USER and len(users) == 4


def test_table_shows_each_users_top_n_with_titles():
    model = model_for(make_ratings_frame())
    table = recommendations_table(model, n=5)
    lines = table.splitlines()
    assert lines[0].startswith("Model v-test")
    header, rows = lines[2], lines[4:]
    assert header.count("|") == 2 + len(preview_users(model)) and len(rows) == 5
    first_user = preview_users(model)[0][0]
    expected = model.recommend(first_user, 5)
    for row, item, score in zip(rows, expected.items, expected.scores):
        cell = row.split(" | ")[1]
        assert cell == f"{model.describe(item).replace('|', chr(92) + '|') or f'tmdb {item}'} · {score:.2f}"
    # The brand-new user's column ranks every film: titled ones by name, the others by id.
    everything = recommendations_table(model, n=model.n_movies)
    assert "Toy Story (1995) · " in everything and "tmdb 107 · " not in everything
    assert "A \\| B (2001) · " in everything and "tmdb 121 · " in everything


def test_movielens_only_model_has_no_app_column():
    ratings = make_ratings_frame()
    model = model_for(ratings[ratings.user_id.str.startswith("ml_")])
    labels = [label for _, label in preview_users(model)]
    assert not any("app user" in label for label in labels) and len(labels) == 3
