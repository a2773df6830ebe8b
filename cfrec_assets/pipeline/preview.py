"""What a model recommends, for people: a Markdown table for the Dagster UI, and the rows
``user_recommendations`` writes for the app.

The table:

Columns: the most active and a median-active MovieLens user, the most active app user (when the
model has any) and a brand-new user (the unknown-user fallback: highest item bias). Each cell is
the film's title and year (or its TMDB id when the model has no title) and the predicted rating.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from cfrec_assets.schema import RECOMMENDATION_COLUMNS, SEED_USER_PREFIXES
from cfrec_serving.loader import DeployedModel

NEW_USER = "(new user)"


def preview_users(model: DeployedModel) -> list[tuple[str, str]]:
    """(user id, column label) for the preview, most active first within each kind."""
    counts = model.rated_counts()
    seeded = sorted((u for u in counts if u.startswith(SEED_USER_PREFIXES)), key=lambda u: (-counts[u], u))
    app = sorted((u for u in counts if not u.startswith(SEED_USER_PREFIXES)), key=lambda u: (-counts[u], u))
    users = []
    if seeded:
        users.append((seeded[0], f"most active MovieLens user {seeded[0]} ({counts[seeded[0]]} ratings)"))
        median = seeded[len(seeded) // 2]
        if median != seeded[0]:
            users.append((median, f"median MovieLens user {median} ({counts[median]} ratings)"))
    if app:
        users.append((app[0], f"most active app user {app[0][:8]}… ({counts[app[0]]} ratings)"))
    users.append((NEW_USER, "a brand-new user (fallback: item bias)"))
    return users


def recommendations_table(model: DeployedModel, n: int = 10) -> str:
    """Top-``n`` unseen films for each preview user, side by side."""
    columns = []
    for user, label in preview_users(model):
        result = model.recommend(user, n)
        cells = [
            f"{model.describe(item) or f'tmdb {item}'} · {score:.2f}"
            for item, score in zip(result.items, result.scores)
        ]
        columns.append((label, cells))
    header = "| # | " + " | ".join(_cell(label) for label, _ in columns) + " |"
    rule = "|---:|" + "---|" * len(columns)
    rows = [
        f"| {rank + 1} | " + " | ".join(_cell(cells[rank]) if rank < len(cells) else "" for _, cells in columns) + " |"
        for rank in range(n)
    ]
    return "\n".join(
        [f"Model {model.version}: top {n} unseen films, predicted rating after the dot", "", header, rule, *rows]
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def app_users(model: DeployedModel) -> list[str]:
    """Users of the app (no seed prefix), sorted."""
    return sorted(u for u in model.rated_counts() if not u.startswith(SEED_USER_PREFIXES))


def recommendation_rows(model: DeployedModel, users: list[str], n: int, created_at: datetime) -> pd.DataFrame:
    """One row per (user, rank): user_id, tmdb_id, rank (1 = best), score, model_version, created_at."""
    rows = []
    for user in users:
        result = model.recommend(user, n)
        rows += [
            (user, item, rank, score, model.version, created_at)
            for rank, (item, score) in enumerate(zip(result.items, result.scores), start=1)
        ]
    return pd.DataFrame(rows, columns=list(RECOMMENDATION_COLUMNS))
