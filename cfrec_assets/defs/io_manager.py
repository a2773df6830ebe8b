"""The IO manager every asset hands its value through: parquet for tables, JSON for records.

Storage is run-scoped, ``<data_dir>/assets/<asset>/<run_id>.<ext>``, so two runs never overwrite
each other's values, and a run loads what *this run* produced. An upstream asset that is not in
the run is loaded from the path its latest materialization recorded. Values are written with
``storage.write_atomic`` / ``write_dir_atomic``; nothing is pickled.

- ``pd.DataFrame`` -> ``<run_id>.parquet`` (metadata: path, ``dagster/row_count``)
- a dataclass whose fields are all DataFrames (e.g. ``MovieLens100K``) -> ``<run_id>/<field>.parquet``
- any other dataclass (a record such as ``ModelVersion``) -> ``<run_id>.json``
"""

from __future__ import annotations

import dataclasses
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from cfrec_serving.artifacts import DEFAULT_DATA_DIR
from cfrec_serving.storage import read_json, write_atomic, write_dir_atomic, write_json

ASSETS_SUBDIR = "assets"


class UpstreamNotMaterializedError(RuntimeError):
    """An asset needs an upstream asset that has never been materialized."""


def _unwrap_optional(kind: Any) -> tuple[Any, bool]:
    """(X, True) for ``X | None`` / ``Optional[X]``, else (kind, False)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        [inner] = [arg for arg in args if arg is not type(None)]
        return inner, True
    return kind, False


def _is_bundle(kind: Any) -> bool:
    return dataclasses.is_dataclass(kind) and all(
        f.type in (pd.DataFrame, "pd.DataFrame") for f in dataclasses.fields(kind)
    )


class LocalIOManager(dg.ConfigurableIOManager):
    """Run-scoped parquet/JSON files under the data folder (see the module docstring)."""

    data_dir: str = Field(default=DEFAULT_DATA_DIR, description="Relative paths resolve against the working directory.")

    def path_for(self, asset_key: dg.AssetKey, run_id: str, kind: Any) -> Path:
        root = Path(self.data_dir).expanduser().resolve() / ASSETS_SUBDIR / Path(*asset_key.path)
        if kind is pd.DataFrame:
            return root / f"{run_id}.parquet"
        if _is_bundle(kind):
            return root / run_id
        if dataclasses.is_dataclass(kind):
            return root / f"{run_id}.json"
        raise TypeError(f"{asset_key.to_user_string()}: LocalIOManager stores DataFrames and dataclasses, not {kind!r}")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self.path_for(context.asset_key, context.run_id, type(obj))
        if isinstance(obj, pd.DataFrame):
            write_atomic(path, lambda tmp: obj.to_parquet(tmp, index=False))
            metadata: dict[str, Any] = {"dagster/row_count": len(obj)}
        elif _is_bundle(type(obj)):
            tables = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}

            def fill(folder: Path) -> None:
                for name, frame in tables.items():
                    frame.to_parquet(folder / f"{name}.parquet", index=False)

            if path.exists():  # a retried step of the same run replaces its own earlier output
                shutil.rmtree(path)
            write_dir_atomic(path, fill)
            metadata = {f"{name}_rows": len(frame) for name, frame in tables.items()}
        else:
            write_json(dataclasses.asdict(obj), path)
            metadata = {}
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), **metadata})

    def load_input(self, context: dg.InputContext) -> Any:
        kind, optional = _unwrap_optional(context.dagster_type.typing_type)
        try:
            path = self._upstream_path(context, kind)
        except UpstreamNotMaterializedError:
            if optional:  # an ``Optional[...]`` input: "never materialized" is a valid answer
                return None
            raise
        if kind is pd.DataFrame:
            return pd.read_parquet(path)
        if _is_bundle(kind):
            return kind(**{f.name: pd.read_parquet(path / f"{f.name}.parquet") for f in dataclasses.fields(kind)})
        return kind(**read_json(path))

    def _upstream_path(self, context: dg.InputContext, kind: Any) -> Path:
        asset_key = context.asset_key
        # A step of this run (or of its parent, on re-execution) gives its run's id; an asset
        # outside the run gets a placeholder id that names no run.
        run_id = context.upstream_output.run_id
        if context.instance.has_run(run_id):
            return self.path_for(asset_key, run_id, kind)
        # Not in this run: the value its latest materialization recorded.
        event = context.instance.get_latest_materialization_event(asset_key)
        name = asset_key.to_user_string()
        if event is None or event.asset_materialization is None:
            raise UpstreamNotMaterializedError(f"{name} has never been materialized: materialize it first")
        recorded = event.asset_materialization.metadata.get("path")
        if recorded is None:
            raise UpstreamNotMaterializedError(
                f"the latest materialization of {name} recorded no path: materialize it again"
            )
        path = Path(str(recorded.value))
        if not path.exists():
            raise UpstreamNotMaterializedError(f"{name}'s latest value {path} is gone: materialize {name} again")
        return path
