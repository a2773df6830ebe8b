"""Running the real asset graph (assets + checks) against a fixture mirror and a temp data dir."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.assets.deployment import GateClosedError, check_gate
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.jobs import tune_svd
from cfrec_assets.defs.resources import CatalogSource, DataStore, MovieLensSource, build_resources
from cfrec_assets.defs.supabase_io import RatingsReader, SupabaseResource
from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_serving.storage import read_json
from cfrec_testkit.movielens_fixtures import MovieLensFixture, write_movielens_fixture


@dataclass
class GraphEnv:
    """A fixture mirror, a data dir and the resources that point at them."""

    mirror: MovieLensFixture
    data_dir: Path
    supabase: RatingsReader
    catalog: CatalogSource

    @property
    def store(self) -> DataStore:
        return DataStore(data_dir=str(self.data_dir))

    @property
    def serving_dir(self) -> Path:
        return self.store.serving_dir

    def resources(self) -> dict[str, Any]:
        """``definitions``' wiring, pointed at the fixture mirror and the temp data dir (never at
        the environment's: every resource is overridden)."""
        return build_resources(
            {},
            io_manager=LocalIOManager(data_dir=str(self.data_dir)),
            movielens=MovieLensSource(base_url=self.mirror.root.as_uri() + "/"),
            store=self.store,
            catalog=self.catalog,
            supabase=self.supabase,
        )

    def job_variables(self) -> dict[str, str]:
        """The environment :func:`graph_job` builds this env's graph from."""
        return {JOB_DATA_DIR: str(self.data_dir), JOB_MIRROR_URL: self.mirror.root.as_uri() + "/"}

    def fixture_check_config(self) -> dict:
        """The fixture is not the official release: tell the shape and coverage checks so."""
        ratings = self.mirror.ratings
        return {
            "ml100k_raw_ml100k_is_official_release": {
                "config": {
                    "ratings": len(ratings),
                    "users": int(ratings["user_id"].nunique()),
                    "items": len(self.mirror.expected),
                }
            },
            "tmdb_links_tmdb_mapping_coverage": {"config": {"min_item_coverage": 0.5, "min_rating_coverage": 0.5}},
            "combined_ratings_combined_ratings_are_valid": {"config": {"min_ratings": 100, "min_users": 5}},
            # ratings drawn from a noisy latent model, on 60 users: the real-data ceiling is too tight
            "cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 1.5}},
        }

    def materialize(
        self,
        instance: dg.DagsterInstance,
        selection: list[str] | None = None,
        ops: dict | None = None,
        raise_on_error: bool = False,
        resources: dict[str, Any] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Materialize ``selection`` (asset names, with their checks; default: everything but the study);
        ``resources`` replace single resources of :meth:`resources`."""
        ops = {**self.fixture_check_config(), **(ops or {})}
        if selection is not None:  # Dagster rejects config for steps that are not in the run
            ops = {op: c for op, c in ops.items() if any(op == a or op.startswith(f"{a}_") for a in selection)}
        return dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection if selection is not None else WITHOUT_TUNING,
            instance=instance,
            resources={**self.resources(), **(resources or {})},
            run_config={"ops": ops},
            raise_on_error=raise_on_error,
        )

    def tune(self, instance: dg.DagsterInstance, config: dict | None = None) -> dg.ExecuteInProcessResult:
        """Run the ``tune_svd`` job (the study reports ``svd_tuning``) on the latest ``combined_ratings``."""
        definitions = dg.Definitions(assets=ALL_ASSETS, jobs=[tune_svd], resources=self.resources())
        return definitions.resolve_job_def("tune_svd").execute_in_process(
            run_config={"ops": {"svd_tuning": {"config": config or {}}}}, instance=instance, raise_on_error=False
        )


WITHOUT_TUNING = dg.AssetSelection.all() - dg.AssetSelection.groups("tuning")
JOB_DATA_DIR, JOB_MIRROR_URL = "CFREC_TESTKIT_DATA_DIR", "CFREC_TESTKIT_MIRROR_URL"


def graph_job() -> dg.JobDefinition:
    """Everything but the study as one in-process job, for ``dg.execute_job(dg.reconstructable(
    graph_job), ...)`` (re-execution needs a job it can rebuild): the data dir and mirror are
    those :meth:`GraphEnv.job_variables` put in the environment, Supabase and the catalog unset."""
    data_dir, mirror_url = os.environ[JOB_DATA_DIR], os.environ[JOB_MIRROR_URL]
    resources = build_resources(
        {},
        io_manager=LocalIOManager(data_dir=data_dir),
        movielens=MovieLensSource(base_url=mirror_url),
        store=DataStore(data_dir=data_dir),
        catalog=CatalogSource(),
        supabase=SupabaseResource(),
    )
    defs = dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[dg.define_asset_job("graph", selection=WITHOUT_TUNING)],
        resources=resources,
        executor=dg.in_process_executor,
    )
    return defs.resolve_job_def("graph")


UP_TO_COMBINED = [
    "ml100k_raw",
    "ml_latest_raw",
    "tmdb_links",
    "movie_titles",
    "catalog_ids",
    "supabase_ratings",
    "combined_ratings",
]
"""Everything ``combined_ratings`` needs, and itself."""
"""What ``train_and_deploy`` runs: the study has its own job and tests."""


class PausingIOManager(dg.IOManager):
    """A graph env's IO manager that pauses one step: once the op named ``op`` has loaded its
    first input, it sets ``paused`` and waits for ``resume``. Give it to one run only
    (``env.materialize(..., resources={"io_manager": pausing})``) to run something else while
    that run sits between loading a value and acting on it."""

    def __init__(self, env: GraphEnv, op: str, timeout: float = 600):
        self.inner = LocalIOManager(data_dir=str(env.data_dir))
        self.op, self.timeout = op, timeout
        self.paused, self.resume = threading.Event(), threading.Event()

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self.inner.handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        value = self.inner.load_input(context)
        if context.op_def.name == self.op and not self.paused.is_set():
            self.paused.set()
            if not self.resume.wait(self.timeout):  # a guard against a hung test, not a schedule
                raise TimeoutError(f"{self.op} was never resumed")
        return value


class RunThread(threading.Thread):
    """``work()`` (a run) in a thread; ``result()`` joins it and returns what it returned or raised."""

    def __init__(self, work: Callable[[], Any]):
        super().__init__(daemon=True)
        self._work, self._outcome = work, None

    def run(self) -> None:
        try:
            self._outcome = (True, self._work())
        except BaseException as error:  # handed to the caller by result()
            self._outcome = (False, error)

    def result(self, timeout: float = 600) -> Any:
        self.join(timeout)
        if self._outcome is None:
            raise TimeoutError("the run in the thread did not finish")
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def interleave(
    env: GraphEnv,
    first: Callable[[dg.IOManager], Any],
    first_pause: str,
    second: Callable[[dg.IOManager], Any],
    second_pause: str | None = None,
) -> tuple[Any, Any]:
    """Two runs on one instance in a forced order. ``first(io_manager)`` and ``second(io_manager)``
    each run with the IO manager they are given. ``first`` starts and pauses once its step
    ``first_pause`` has loaded its input; ``second`` then runs until its step ``second_pause`` has
    (to its end when None); then ``first`` runs to its end, and then ``second``. Returns both
    results."""
    first_io, second_io = PausingIOManager(env, first_pause), PausingIOManager(env, second_pause or "")
    first_run, second_run = RunThread(lambda: first(first_io)), RunThread(lambda: second(second_io))
    try:
        first_run.start()
        if not first_io.paused.wait(first_io.timeout):
            raise TimeoutError(f"the first run never reached {first_pause}")
        second_run.start()
        if second_pause is None:
            second_run.join(second_io.timeout)
        elif not second_io.paused.wait(second_io.timeout):
            raise TimeoutError(f"the second run never reached {second_pause}")
        first_io.resume.set()
        first_result = first_run.result()
    finally:  # never leave a run waiting
        first_io.resume.set()
        second_io.resume.set()
    return first_result, second_run.result()


def make_graph_env(tmp_path: Path, **fixture_kwargs) -> GraphEnv:
    kwargs = {"n_users": 60, "n_items": 80, "n_ratings": 2400, "seed": 3, **fixture_kwargs}
    return GraphEnv(
        mirror=write_movielens_fixture(tmp_path / "mirror", **kwargs),
        data_dir=tmp_path / "data",
        supabase=SupabaseResource(),
        catalog=CatalogSource(),
    )


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (relative path -> digest): byte-for-byte comparison."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Check name -> its evaluation in the run (passed, severity, description, metadata)."""
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {name: evaluation.passed for name, evaluation in check_evaluations(result).items()}


def check_descriptions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Check name -> the description its evaluation recorded (the verdict people read)."""
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data.description or ""
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Step key -> the failure's message and its causes, joined."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error, parts = event.event_specific_data.error, []
            while error is not None:
                parts.append(error.message.strip())
                error = error.cause
            out[event.step_key] = " <- ".join(parts)
    return out


def shipped(result: dg.ExecuteInProcessResult) -> tuple[ModelVersion, ModelMetrics]:
    """The svd_model and cv_metrics records a run produced (what its deployed_model receives)."""
    return (
        ModelVersion(**read_json(Path(metadata(result, "svd_model")["path"]))),
        ModelMetrics(**read_json(Path(metadata(result, "cv_metrics")["path"]))),
    )


def gate_refusal(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str | None:
    """Why the deployment gate refuses the model ``result`` trained (None: it would promote it)."""
    try:
        check_gate(instance, *shipped(result))
    except GateClosedError as closed:
        return str(closed)
    return None


def recorded_target(result: dg.ExecuteInProcessResult, check: str) -> str:
    """The run whose materialization Dagster recorded as the target of ``check``'s evaluation in
    ``result`` (the asset's latest one when the evaluation was stored)."""
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == check
    ]
    return evaluation.target_materialization_data.run_id
