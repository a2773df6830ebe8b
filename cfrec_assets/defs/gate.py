"""The deployment gate: did every blocking check pass on the materializations about to ship?

Each check is looked up for one materialization, never "the latest": ``svd_model`` and
``cv_metrics`` by the run that produced the values ``deployed_model`` received, upstream assets
by the materialization in that model's run, or else the latest one before it (what a partial run
of ``svd_model`` loaded). So two overlapping runs each judge their own model, and a check that
failed, never ran or is still running closes the gate with a message that says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg
from dagster import AssetRecordsFilter, DagsterEventType

PLANNED = "PLANNED"  # an execution record's status before the check has reported
HISTORY_LIMIT = 100
"""Check executions scanned per check (newest first); far more than runs overlap in practice."""


def materialization_runs(
    instance: dg.DagsterInstance, anchor: dg.AssetKey, anchor_run_id: str, upstream: Iterable[dg.AssetKey]
) -> dict[dg.AssetKey, str | None]:
    """Run id of the materialization of each ``upstream`` asset that ``anchor``'s run used.

    The one in ``anchor_run_id`` if that run materialized it, else the latest one recorded
    before ``anchor``'s materialization; None when there is none.
    """
    # Timestamps, not storage ids: SQLite keeps one event database per run, so ids do not compare.
    in_run = {}
    for record in instance.get_records_for_run(anchor_run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
        in_run[record.event_log_entry.dagster_event.asset_key] = record.event_log_entry.timestamp
    anchor_time = in_run.get(anchor)
    runs: dict[dg.AssetKey, str | None] = {anchor: anchor_run_id if anchor_time else None}
    for key in upstream:
        if key in in_run:
            runs[key] = anchor_run_id
            continue
        found = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, before_timestamp=anchor_time), limit=1
        )
        runs[key] = found.records[0].run_id if found.records else None
    return runs


def gate_problems(
    instance: dg.DagsterInstance,
    checks: Iterable[dg.AssetCheckKey],
    runs: Mapping[dg.AssetKey, str | None],
    version: str,
) -> list[str]:
    """Why ``version`` may not ship: for each blocking check, its newest verdict on the
    materialization of its asset that ``runs`` names must be a pass (or a WARN-severity failure,
    which Dagster does not block on either)."""
    problems = []
    for key in checks:
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        run_id = runs.get(key.asset_key)
        if run_id is None:
            problems.append(f"{name}: {key.asset_key.to_user_string()} has no materialization to check")
            continue
        record = _newest_record_for(instance, key, run_id)
        if record is None:
            problems.append(f"{name} has not run on the materialization of run {run_id[:8]}")
        elif record.status.value == PLANNED:
            run = instance.get_run_by_id(record.run_id)
            if run is not None and run.is_finished:
                problems.append(f"{name} never reported: run {record.run_id[:8]} ended ({run.status.value}) first")
            else:
                problems.append(f"{name}: another run ({record.run_id[:8]}) is still checking version {version}")
        elif record.evaluation is None or (
            not record.evaluation.passed and record.evaluation.severity != dg.AssetCheckSeverity.WARN
        ):
            description = record.evaluation.description if record.evaluation else "no result recorded"
            problems.append(f"{name} failed: {description}")
    return problems


def _newest_record_for(instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str):
    """The newest execution of ``key`` that targeted the materialization of run ``run_id``."""
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY_LIMIT)
    for record in history:  # newest first
        evaluation = record.evaluation if record.status.value != PLANNED else None
        target = getattr(evaluation, "target_materialization_data", None)
        if (target.run_id if target is not None else record.run_id) == run_id:
            return record
    return None


def materialization_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> dict:
    """Plain metadata of ``key``'s materialization in run ``run_id``, else of its latest one
    (a check run on its own checks the latest materialization)."""
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
        if record.event_log_entry.dagster_event.asset_key == key:
            return _plain(record.event_log_entry.asset_materialization.metadata)
    event = instance.get_latest_materialization_event(key)
    return _plain(event.asset_materialization.metadata) if event and event.asset_materialization else {}


def _plain(metadata: Mapping) -> dict:
    return {name: value.value for name, value in metadata.items()}
