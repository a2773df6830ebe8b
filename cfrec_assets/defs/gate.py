"""The deployment gate: did every blocking check pass on the materializations about to ship?

Each check is looked up for one materialization, never "the latest": ``svd_model`` and
``cv_metrics`` by the run that produced the values ``deployed_model`` received, upstream assets
by the materialization in that model's run, or else the latest one before it (what a partial run
of ``svd_model`` loaded). So two overlapping runs each judge their own model, and a check that
failed, never ran or is still running closes the gate with a message that says which.

Which materialization a verdict is about is read off the run that produced it, not off the
target Dagster records: Dagster stores the asset's *latest* materialization when the verdict is
stored, which is another run's when that run materialized the same asset while the check ran.
The IO manager hands a check the value of its own run (or, on re-execution, of the run that
produced it), so a check in such a run judged that run's materialization; only a check-only run
read "the latest", and its recorded target is trusted only when nothing materialized the asset
while that run was under way.
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


def newest_evaluation(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str
) -> dg.AssetCheckEvaluation | None:
    """``key``'s newest verdict on the materialization of run ``run_id``; None while none is reported."""
    record = _newest_record_for(instance, key, run_id)
    return None if record is None or record.status.value == PLANNED else record.evaluation


def _newest_record_for(instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str):
    """The newest execution of ``key`` that judged (or, still planned, will judge) the
    materialization of run ``run_id``."""
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY_LIMIT)
    for record in history:  # newest first
        if record.status.value == PLANNED:
            judged = record.run_id  # only counted in the materializing run itself
        else:
            judged = _judged_run(instance, key.asset_key, record)
        if judged == run_id:
            return record
    return None


def _judged_run(instance: dg.DagsterInstance, asset: dg.AssetKey, record) -> str | None:
    """The run whose materialization of ``asset`` this finished check execution judged; None when
    that cannot be known."""
    producer = _producing_run(instance, asset, record.run_id)
    if producer is not None:
        return producer
    # A check-only run: the IO manager loaded the latest materialization, and Dagster recorded
    # the latest one when the verdict was stored. They are the same one unless the asset was
    # materialized in between; the run's start bounds "in between" from below.
    target = getattr(record.evaluation, "target_materialization_data", None)
    started = getattr(instance.get_run_record_by_id(record.run_id), "start_time", None)
    if target is None or started is None or record.event is None:
        return None
    during = AssetRecordsFilter(asset_key=asset, after_timestamp=started, before_timestamp=record.event.timestamp)
    return None if instance.fetch_materializations(during, limit=1).records else target.run_id


def _producing_run(instance: dg.DagsterInstance, asset: dg.AssetKey, run_id: str) -> str | None:
    """The run whose value of ``asset`` a step of run ``run_id`` loaded when that value came from
    the run itself: ``run_id`` if it materialized ``asset``, else its nearest re-executed ancestor
    that did (a re-execution loads the outputs of steps it skipped from its parent). None for a
    run that never produced it (it loaded the latest materialization)."""
    seen = set()
    while run_id is not None and run_id not in seen:
        seen.add(run_id)
        records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
        if any(r.event_log_entry.dagster_event.asset_key == asset for r in records):
            return run_id
        run = instance.get_run_by_id(run_id)
        run_id = run.parent_run_id if run is not None else None
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
