"""The Spark trainer for real (never mocked): embedded Spark through the graph on ml-latest-small,
the npz against Spark's own predictions, a Spark Connect server and a standalone cluster started
on loopback, the failure paths (no Java, unreachable clusters, a master without workers), and
``auto``. One JVM serves the module's embedded tests; the ALS settings are small (rank 10, 5
iterations) to keep CI short."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from surprise import Dataset, Reader
from surprise.model_selection import KFold

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.resources import DataStore, MovieLensSource, SparkResource, build_resources
from cfrec_assets.pipeline.spark import als
from cfrec_assets.pipeline.spark.cleanup import releasing
from cfrec_assets.pipeline.spark.session import SparkSettings, SparkUnavailableError, endpoint, find_java, java_major
from cfrec_serving.artifacts import MODEL_FILE, SERVING_FILE, TRAINSET_FILE
from cfrec_serving.loader import DeployedModel, load_deployed
from cfrec_serving.model_arrays import read_model_arrays, write_model_arrays
from cfrec_serving.targets.folder import file_records
from cfrec_serving.targets.manifest import DeploymentError
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import (
    UP_TO_COMBINED,
    WITHOUT_TUNING,
    check_results,
    failure_messages,
    make_graph_env,
    materialized,
    metadata,
)
from cfrec_testkit.s3_server import free_port
from cfrec_testkit.shared_data import real_movielens_or_skip
from cfrec_testkit.spark_servers import spark_connect_server, standalone_master, standalone_worker

LOCAL = SparkResource(master="local[2]", driver_memory="1g")
FAST_ALS = {"trainer": "spark", "als_rank": 10, "als_max_iter": 5}
TOKEN = "tok-5f3a9c0e7b"


def ml_latest_small_ratings() -> pd.DataFrame:
    """ml-latest-small's ratings as a training table (movieId standing in for the TMDB id)."""
    archive = real_movielens_or_skip() / "ml-latest-small.zip"
    with zipfile.ZipFile(archive) as bundle:
        raw = pd.read_csv(io.BytesIO(bundle.read("ml-latest-small/ratings.csv")))
    return pd.DataFrame(
        {"user_id": "mll_" + raw["userId"].astype(str), "tmdb_id": raw["movieId"], "rating": raw["rating"]}
    )


@pytest.fixture(scope="module")
def local_spark():
    with LOCAL.session() as session:
        yield session


# --- without Spark -------------------------------------------------------------------------


def test_folds_are_the_ones_surprise_cuts() -> None:
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"user_id": rng.integers(0, 40, 500).astype(str), "tmdb_id": rng.integers(0, 90, 500)})
    table = pairs.drop_duplicates().assign(rating=3.0).reset_index(drop=True)
    row = {(u, int(m)): i for i, (u, m) in enumerate(zip(table["user_id"], table["tmdb_id"]))}
    dataset = Dataset.load_from_df(table[["user_id", "tmdb_id", "rating"]], Reader(rating_scale=(0.5, 5)))
    folds = als.surprise_folds(len(table), 3, seed=42)
    for fold, (_, testset) in enumerate(KFold(n_splits=3, random_state=42, shuffle=True).split(dataset)):
        assert sorted(row[(u, int(m))] for u, m, _ in testset) == np.flatnonzero(folds == fold).tolist()


def test_cluster_urls_are_shown_without_their_parameters() -> None:
    assert endpoint(f"sc://spark.example.com:443/;token={TOKEN};use_ssl=true") == "sc://spark.example.com:443"
    assert SparkSettings(remote=f"sc://me@h:15002/;token={TOKEN}").describe() == "Spark Connect sc://h:15002"
    assert SparkSettings(master="spark://a:7077,b:7077").describe() == "standalone spark://a:7077,b:7077"
    assert (java_major('openjdk version "17.0.15" 2025-04-15'), java_major('java version "1.8.0_402"')) == (17, 8)


def test_missing_java_is_named_with_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(SparkUnavailableError, match="no java on PATH.*openjdk-17-jre-headless.*CFREC_TRAINER"):
        find_java({"PATH": str(tmp_path)})
    with pytest.raises(SparkUnavailableError, match=f"JAVA_HOME={tmp_path} has no bin/java"):
        find_java({"JAVA_HOME": str(tmp_path), "PATH": "/usr/bin"})
    old = tmp_path / "jdk11" / "bin"
    old.mkdir(parents=True)
    (old / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\"' >&2\n")
    (old / "java").chmod(0o755)
    with pytest.raises(SparkUnavailableError, match="needs Java 17\\+ but .* is version 11"):
        find_java({"JAVA_HOME": str(old.parent)})


def test_a_failing_release_does_not_hide_why_the_block_failed() -> None:
    # A dead Connect server fails the hand-off ("Java heap space") and then its cleanup too
    # ("Application error processing RPC"): the step must report the first.
    released = []

    def release() -> None:
        released.append(True)
        raise RuntimeError("Application error processing RPC")

    with pytest.raises(MemoryError, match="Java heap space"), releasing(release):
        raise MemoryError("Java heap space")
    with pytest.raises(RuntimeError, match="Application error"), releasing(release):
        pass  # a release that fails on its own is still an error
    assert released == [True, True]


def test_an_unknown_trainer_is_refused_naming_the_choices() -> None:
    assert SparkResource(trainer="spark").chosen_trainer(None) == "spark"
    assert SparkResource(trainer="spark").chosen_trainer("auto") == "auto"  # the run's config wins
    with pytest.raises(ValueError, match="unknown trainer 'tensorflow' .*: use surprise, spark, auto"):
        SparkResource(trainer="tensorflow").chosen_trainer(None)


def test_npz_only_versions_are_complete_but_half_pickled_ones_are_not(tmp_path: Path) -> None:
    (tmp_path / SERVING_FILE).write_bytes(b"npz")
    assert set(file_records(tmp_path)) == {SERVING_FILE}
    (tmp_path / MODEL_FILE).write_bytes(b"pickle")
    with pytest.raises(DeploymentError, match=f"missing artifact .*{TRAINSET_FILE}"):
        file_records(tmp_path)


# --- embedded Spark ----------------------------------------------------------------------------


@pytest.mark.real_data
def test_npz_predictions_equal_spark_transform(local_spark, tmp_path: Path) -> None:
    ratings = ml_latest_small_ratings()
    indexed = als.IndexedRatings.of(ratings)
    params = als.ALSParams(rank=10, max_iter=5).resolved(local_spark)
    rng = np.random.default_rng(7)
    known = rng.choice(len(ratings), 300, replace=False)
    users = np.concatenate(
        [indexed.users[known], rng.integers(0, len(indexed.user_ids), 40), [len(indexed.user_ids)] * 20]
    )
    items = np.concatenate(
        [rng.integers(0, len(indexed.item_ids), 300), [len(indexed.item_ids)] * 40, rng.integers(0, 50, 20)]
    )
    pairs = pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32)}).drop_duplicates()
    with als.handed_to_spark(local_spark, indexed.table(), tmp_path) as table:
        fitted = als.fit(table, params)
        arrays = als.model_arrays(fitted, indexed)
        from_spark = als.score(fitted, local_spark.createDataFrame(pairs)).toPandas()
        fitted.release()
    write_model_arrays(arrays, tmp_path / SERVING_FILE)
    model = DeployedModel.from_arrays(read_model_arrays((tmp_path / SERVING_FILE).read_bytes()))
    assert len(from_spark) == len(pairs) > 300

    def raw_id(ids: np.ndarray, index: int, unknown):
        return ids[index] if index < len(ids) else unknown

    for user, item, spark_estimate in from_spark[["user", "item", "prediction"]].itertuples(index=False):
        served = model.predict(
            str(raw_id(indexed.user_ids, user, "mll_new")), int(raw_id(indexed.item_ids, item, 10**9))
        )
        assert served.rating == pytest.approx(float(np.clip(spark_estimate, 0.5, 5.0)), abs=1e-5)
        if served.fallback is None:  # the raw score, before serving clips it to the scale
            raw = arrays.global_mean + arrays.bu[user] + arrays.bi[item] + arrays.qi[item] @ arrays.pu[user]
            assert raw == pytest.approx(spark_estimate, abs=1e-5)
    assert {model.predict("mll_new", 1).fallback, model.predict("mll_1", 10**9).fallback} == {
        "unknown_user",
        "unknown_movie",
    }


def test_pandas_version_warnings_stay_out_of_step_logs(local_spark) -> None:
    frame = pd.DataFrame({"user": [1, 2], "rating": [4.0, 3.5]})

    def pandas_warnings(convert) -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            convert()
        return [str(w.message) for w in seen if "support pandas" in str(w.message)]

    # pyspark 4.3 under pandas 3 warns on every conversion (a dozen lines in each step's log) ...
    assert pandas_warnings(lambda: local_spark.createDataFrame(frame).toPandas())

    def in_a_step() -> None:
        with LOCAL.session() as spark:
            spark.createDataFrame(frame).toPandas()

    # ... but not while the trainer's session is open.
    assert pandas_warnings(in_a_step) == []


@pytest.fixture(scope="module")
def real_graph(tmp_path_factory, local_spark):
    """ml-latest-small through the whole graph, trained on Spark; then a Surprise challenger."""
    mirror = real_movielens_or_skip()
    data_dir = tmp_path_factory.mktemp("spark-real") / "data"
    resources = build_resources(
        {},
        io_manager=LocalIOManager(data_dir=str(data_dir)),
        movielens=MovieLensSource(base_url=mirror.as_uri() + "/"),
        store=DataStore(data_dir=str(data_dir)),
        spark=LOCAL,
    )
    ops = {"combined_ratings": {"config": {"seeds": "ml-latest"}}, "svd_model": {"config": FAST_ALS}}
    with dg.instance_for_test() as instance:
        spark_run = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=WITHOUT_TUNING,
            instance=instance,
            resources=resources,
            run_config={"ops": ops},
            raise_on_error=False,
        )
        yield spark_run, data_dir, instance, resources


@pytest.mark.real_data
def test_graph_trains_checks_and_promotes_a_spark_model(real_graph) -> None:
    result, data_dir, _, _ = real_graph
    assert result.success, failure_messages(result)
    assert "deployed_model" in materialized(result)
    assert all(check_results(result).values()), check_results(result)
    model = metadata(result, "svd_model")
    assert model["trainer"] == "spark" and model["spark"] == "local[2]" and model["handoff"] == "parquet"
    assert model["params"] == {
        "rank": 10, "max_iter": 5, "reg_param": 0.1, "reg_user_bias": 15.0, "reg_item_bias": 10.0, "seed": 42, "num_blocks": 2,
    }  # fmt: skip
    assert (model["ratings"], model["users"]) == (100_822, 610)
    hashed = {key for key in model if key.endswith("_sha256")}
    assert hashed == {"cf_model_sha256", "training_ratings_sha256"}  # no pickles: not a Surprise model
    assert not list((data_dir / "spark-staging").iterdir())  # the hand-off file is gone
    cv = metadata(result, "cv_metrics")
    assert 0.8 < cv["rmse_mean"] < 0.95 and cv["trainer"] == "spark"
    assert cv["folds"].count("\n| ") == 3 + 2  # a row per fold, then mean and std

    serving = DataStore(data_dir=str(data_dir)).serving_dir
    manifest = open_target(serving).read_manifest()
    assert manifest["version"] == model["version"] and manifest["trainer"] == "spark"
    assert manifest["params"] == model["params"] and set(manifest["files"]) == {SERVING_FILE}
    served = load_deployed(serving)
    assert served.n_users == 610 and served.recommend("mll_1", 10).fallback is None
    assert served.recommend("a-new-user", 5).fallback == "unknown_user"
    assert served.describe(862) == "Toy Story (1995)"


@pytest.mark.real_data
def test_a_surprise_challenger_is_judged_against_the_spark_champion(real_graph) -> None:
    spark_run, data_dir, instance, resources = real_graph
    assert spark_run.success
    champion = metadata(spark_run, "cv_metrics")["rmse_mean"]
    challenger = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=["svd_model", "cv_metrics", "deployed_model"],
        instance=instance,
        resources=resources,
        run_config={"ops": {"svd_model": {"config": {"trainer": "surprise", "params": "seed"}}}},
        raise_on_error=False,
    )
    verdict = next(
        e.event_specific_data
        for e in challenger.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == "challenger_no_worse_than_champion"
    )
    assert verdict.metadata["champion_rmse"].value == champion
    surprise_rmse = metadata(challenger, "cv_metrics")["rmse_mean"]
    assert verdict.metadata["challenger_rmse"].value == surprise_rmse
    assert verdict.passed == (surprise_rmse <= champion + 0.01)
    served = open_target(DataStore(data_dir=str(data_dir)).serving_dir).read_manifest()
    assert served["trainer"] == ("surprise" if verdict.passed else "spark")


def test_auto_trains_on_spark_when_surprise_would_not_fit(tmp_path: Path, monkeypatch, local_spark) -> None:
    monkeypatch.setenv("CFREC_TRAINER", "auto")  # the environment default, no trainer in the config
    env = make_graph_env(tmp_path)
    spark = build_resources()["spark"]
    assert isinstance(spark.trainer, dg.EnvVar)
    selection = [*UP_TO_COMBINED, "svd_model"]
    tight = {"memory_budget_bytes": 1_000_000, "als_rank": 5, "als_max_iter": 3}
    with dg.instance_for_test() as instance:
        roomy = env.materialize(instance, selection, resources={"spark": spark})
        squeezed = env.materialize(
            instance, selection, ops={"svd_model": {"config": tight}}, resources={"spark": spark}
        )
        logs = [e.message for e in instance.all_logs(squeezed.run_id) if "trainer auto" in (e.message or "")]
    assert roomy.success and metadata(roomy, "svd_model")["trainer"] == "surprise"
    assert squeezed.success, failure_messages(squeezed)
    assert metadata(squeezed, "svd_model")["trainer"] == "spark"
    assert check_results(squeezed)["svd_artifacts_load_and_predict"]
    assert logs and "Surprise would need about 0.0 GiB" in logs[0] and "training with Spark ALS" in logs[0]


# --- failures ----------------------------------------------------------------------------------


def _nothing_trained_or_deployed(env) -> None:
    for folder in (env.data_dir / "models", env.data_dir / "spark-staging"):
        assert not folder.exists() or not list(folder.iterdir()), folder
    assert not (env.serving_dir / "manifest.json").exists()


def test_no_java_fails_with_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, ops={"svd_model": {"config": FAST_ALS}}, resources={"spark": LOCAL})
    assert not result.success
    message = failure_messages(result)["svd_model"]
    assert "no java on PATH" in message and "apt-get install openjdk-17-jre-headless" in message
    assert "CFREC_TRAINER=surprise" in message and "CFREC_SPARK_REMOTE" in message
    assert "deployed_model" not in materialized(result)
    _nothing_trained_or_deployed(env)


@pytest.mark.parametrize(
    ("variable", "url", "shown"),
    [
        (
            "CFREC_SPARK_REMOTE",
            f"sc://127.0.0.1:{{port}}/;token={TOKEN}",
            "the Spark Connect server at sc://127.0.0.1:{port}",
        ),
        ("CFREC_SPARK_MASTER", "spark://127.0.0.1:{port}", "the Spark master at spark://127.0.0.1:{port}"),
    ],
)
def test_unreachable_cluster_fails_fast_and_deploys_nothing(tmp_path, monkeypatch, variable, url, shown) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv(variable, url.format(port=port))
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(
            instance, ops={"svd_model": {"config": FAST_ALS}}, resources={"spark": build_resources()["spark"]}
        )
        stored = [p.read_bytes() for p in Path(instance.root_directory).rglob("*") if p.is_file()]
    assert not result.success
    message = failure_messages(result)["svd_model"]
    assert f"cannot reach {shown.format(port=port)} ({variable})" in message and "nothing was trained" in message
    assert stored and not [p for p in stored if TOKEN.encode() in p]
    _nothing_trained_or_deployed(env)


# --- clusters on loopback ----------------------------------------------------------------------


def test_graph_trains_through_a_spark_connect_server(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with spark_connect_server(tmp_path / "connect") as url, dg.instance_for_test() as instance:
        remote = SparkResource(remote=url, connect_timeout_seconds=60)
        result = env.materialize(instance, ops={"svd_model": {"config": FAST_ALS}}, resources={"spark": remote})
    assert result.success, failure_messages(result)
    assert all(check_results(result).values()), check_results(result)
    model = metadata(result, "svd_model")
    assert model["spark"] == f"Spark Connect {url}" and model["handoff"] == "arrow"
    assert model["params"]["num_blocks"] == 2  # the server's shuffle partitions
    assert metadata(result, "cv_metrics")["rmse_mean"] < 1.5
    served = load_deployed(env.serving_dir)
    assert served.version == model["version"] == metadata(result, "deployed_model")["version"]
    assert not (env.data_dir / "spark-staging").exists()  # nothing staged on this disk for a cluster


def test_standalone_cluster_trains_and_a_master_without_workers_fails(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    selection = [*UP_TO_COMBINED, "svd_model"]
    ops = {"svd_model": {"config": FAST_ALS}}
    with standalone_master(tmp_path / "master") as master, dg.instance_for_test() as instance:
        loopback = {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.memory": "512m",
        }
        cluster = SparkResource(master=master, conf=loopback, connect_timeout_seconds=10)
        without_workers = env.materialize(instance, selection, ops=ops, resources={"spark": cluster})
        assert not without_workers.success
        assert "gave this application no executor within 10 s" in failure_messages(without_workers)["svd_model"]
        _nothing_trained_or_deployed(env)
        with standalone_worker(tmp_path / "worker", master):
            cluster = SparkResource(master=master, conf=loopback, connect_timeout_seconds=120)
            trained = env.materialize(instance, selection, ops=ops, resources={"spark": cluster})
    assert trained.success, failure_messages(trained)
    model = metadata(trained, "svd_model")
    assert model["spark"] == f"standalone {master}" and model["handoff"] == "arrow"
    assert check_results(trained)["svd_artifacts_load_and_predict"]
