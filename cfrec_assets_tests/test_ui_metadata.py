"""What the Dagster UI shows about each asset, read from the code location's Definitions object:
owners, tags, kinds, code references, column schemas that match the real values, Markdown
descriptions."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cfrec_assets import schema
from cfrec_assets.definitions import defs
from cfrec_assets.defs.assets import OPT_IN_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_testkit.graph import UP_TO_COMBINED, make_graph_env, metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECS = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
OPT_IN_SPECS = {spec.key.to_user_string(): spec for asset in OPT_IN_ASSETS for spec in asset.specs}
STAGES = {"ingest", "prepare", "train", "evaluate", "ship"}
TABLES = {
    "tmdb_links": schema.TMDB_LINK_TABLE,
    "movie_titles": schema.MOVIE_TITLE_TABLE,
    "supabase_ratings": schema.APP_RATING_TABLE,
    "combined_ratings": schema.COMBINED_TABLE,
}
# reStructuredText that Markdown shows literally: ``code``, :class:`X`, :func:`f` ...
REST_MARKUP = re.compile(r"``|:(class|func|meth|attr|data|mod):`")


def test_every_asset_has_owners_a_stage_and_real_kinds():
    assert set(SPECS) >= {"ml100k_raw", "svd_model", "cv_metrics", "deployed_model", "supabase_ratings_table"}
    for name, spec in {**SPECS, **OPT_IN_SPECS}.items():
        assert spec.owners == ["team:cfrec"], name
        assert spec.tags.get("stage") in STAGES, (name, spec.tags)
        assert spec.kinds and "python" not in spec.kinds, (name, spec.kinds)  # "python" says nothing
    assert SPECS["deployed_model"].kinds == {"numpy", "s3", "file"}
    assert SPECS["catalog_ids"].kinds == {"json", "csv", "supabase"}
    holding_app_users = {n for n, s in {**SPECS, **OPT_IN_SPECS}.items() if s.tags.get("personal_data")}
    assert holding_app_users == {
        "supabase_ratings_table",
        "supabase_ratings",
        "combined_ratings",
        "svd_model",
        "user_recommendations",
    }


def test_every_materializable_asset_links_to_its_function():
    for name, spec in SPECS.items():
        if name in ("supabase_ratings_table", "svd_tuning"):  # external, or reported by the tune_svd job's op
            continue
        [reference] = spec.metadata["dagster/code_references"].code_references
        path = Path(reference.file_path)
        assert path.is_relative_to(REPO_ROOT / "cfrec_assets" / "defs" / "assets"), (name, path)
        decorated = path.read_text().splitlines()[reference.line_number - 1 :]
        assert any(line.startswith(f"def {name}(") for line in decorated[:12]), (name, reference)


def test_table_assets_show_schema_py_columns():
    for name, table in TABLES.items():
        columns = SPECS[name].metadata["dagster/column_schema"].columns
        assert [(c.name, c.type, c.description) for c in columns] == list(table), name
    recommendations = OPT_IN_SPECS["user_recommendations"].metadata["dagster/column_schema"].columns
    assert [(c.name, c.type) for c in recommendations] == [(n, t) for n, t, _ in schema.RECOMMENDATION_TABLE]
    # ... which are the columns and SQL types of the table the app creates
    sql = (REPO_ROOT / "deploy" / "user_recommendations.sql").read_text()
    create = sql[sql.index("create table") : sql.index("primary key")]
    declared = re.findall(r"^\s+(\w+)\s+(\w+)\s+not null", create, flags=re.MULTILINE)
    assert declared == [(n, t) for n, t, _ in schema.RECOMMENDATION_TABLE]


DTYPE_CHECKS = {
    "string": pd.api.types.is_string_dtype,
    "int64": lambda dtype: dtype == "int64",
    "nullable int64": lambda dtype: dtype == "Int64",
    "float64": lambda dtype: dtype == "float64",
    "timestamp UTC": lambda dtype: isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC",
}


def test_column_schemas_match_the_materialized_tables(tmp_path):
    """The schema the UI shows is what the assets really hand on: names, order and types."""
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=UP_TO_COMBINED)
    assert result.success
    for name, table in TABLES.items():
        frame = pd.read_parquet(metadata(result, name)["path"])
        assert list(frame.columns) == [column for column, _, _ in table], name
        for column, kind, _ in table:
            assert DTYPE_CHECKS[kind](frame[column].dtype), (name, column, frame[column].dtype, kind)


@pytest.mark.parametrize("kind", ["asset", "check"])
def test_descriptions_are_markdown_not_restructuredtext(kind):
    if kind == "asset":
        described = {name: spec.description for name, spec in {**SPECS, **OPT_IN_SPECS}.items()}
    else:
        described = {spec.name: spec.description for checks in ALL_CHECKS for spec in checks.check_specs}
    assert all(described.values()), [name for name, text in described.items() if not text]
    literal = {name: REST_MARKUP.findall(text) for name, text in described.items() if REST_MARKUP.search(text)}
    assert not literal, literal
