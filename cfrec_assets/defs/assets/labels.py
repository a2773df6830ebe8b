"""What the Dagster UI shows about every asset besides its value: owners, tags, column schemas.

One place, so every asset says the same thing the same way; the asset modules pass these to
their decorators. Filter the lineage with `tag:stage=train` or `tag:personal_data=app_user_ids`.
"""

import dagster as dg

OWNERS = ["team:cfrec"]
"""Who to ask about these assets (Dagster accepts e-mail addresses and `team:<name>`)."""

PERSONAL_DATA = {"personal_data": "app_user_ids"}
"""On assets whose value holds the app's user ids (and so their ratings): handle with care."""


def stage(name: str, **extra: str) -> dict[str, str]:
    """Tags: the pipeline stage (ingest, prepare, train, evaluate, ship), plus any others."""
    return {"stage": name, **extra}


def column_schema(table: tuple[tuple[str, str, str], ...]) -> dict[str, dg.TableSchema]:
    """Definition metadata showing `table` (`schema.py`'s (column, type, description) rows) in
    the asset's Columns tab before it has ever run."""
    columns = [dg.TableColumn(name, type, description) for name, type, description in table]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}
