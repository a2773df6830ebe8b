"""Reading what upstream assets recorded, so each asset can also run on its own."""

from __future__ import annotations

from typing import Any

import dagster as dg


class UpstreamNotMaterializedError(RuntimeError):
    """An asset needs an upstream asset that has never been materialized."""


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, Any]:
    """Plain metadata values of ``asset``'s latest materialization."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        raise UpstreamNotMaterializedError(f"{asset} has never been materialized: materialize it first")
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}
