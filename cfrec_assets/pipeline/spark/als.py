"""MLlib ALS as the cfrec model: the hand-off, the fit, scoring, K-fold CV, and the npz arrays.

The model is the one ``serving`` scores, ``mu + b_u + b_i + q_i . p_u``, fitted in two parts:
damped baseline biases (one pass of Koren's estimates: film biases over ``reg_item_bias + n_i``,
then user biases on what is left over ``reg_user_bias + n_u``), then ALS on the residuals
``r - mu - b_u - b_i``. So the npz keeps real biases (an unknown user still gets ``mu + b_i``,
films ranked by their damped average, as with Surprise), and its prediction of a pair is what
:func:`score` computes in Spark: ``mu + b_u + b_i + ALSModel.transform`` (unclipped; the factor
term is 0 when the user or the film is unknown, as in serving). Spark's float32 factors are
stored as float64.

Cross-validation cuts Surprise's folds (:func:`surprise_folds`), clips predictions to the rating
scale as Surprise and serving do, and scores them with the same ``ranking_metrics``: a
champion/challenger comparison means the same whichever trainer made either model.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfrec_assets.pipeline.ranking import DEFAULT_K, RELEVANCE_THRESHOLD, ndcg_at, precision_at, ranking_metrics
from cfrec_assets.pipeline.spark.cleanup import releasing
from cfrec_assets.schema import RATING_SCALE
from cfrec_serving.model_arrays import ModelArrays

if TYPE_CHECKING:  # pyspark is the optional [spark] extra
    from pyspark.sql import DataFrame, SparkSession

MAX_BLOCKS = 10
"""ALS's default number of user/item blocks; fewer when the session has fewer task slots."""


@dataclass(frozen=True)
class ALSParams:
    """Hyper-parameters of the Spark trainer (recorded in the version's ``params``)."""

    rank: int = 50
    max_iter: int = 10
    reg_param: float = 0.1
    """ALS's regularisation (Spark scales it by each row's rating count)."""
    reg_user_bias: float = 15.0
    reg_item_bias: float = 10.0
    """Damping of the baseline biases: pseudo-ratings at the global mean (Surprise's baseline defaults)."""
    seed: int = 42
    num_blocks: int = 0
    """User and item blocks; 0: the session's task slots (Spark Connect: its shuffle partitions), at
    most 10. The blocks seed the factors' initialisation, so a version records the resolved number
    and its CV uses the same."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, spark: SparkSession) -> ALSParams:
        if self.num_blocks > 0:
            return self
        if is_connect(spark):  # no SparkContext: the server's shuffle partitions say how parallel it is
            slots = int(spark.conf.get("spark.sql.shuffle.partitions") or MAX_BLOCKS)
        else:
            slots = spark.sparkContext.defaultParallelism
        return replace(self, num_blocks=max(1, min(MAX_BLOCKS, slots)))


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect client session (no SparkContext, no JVM here)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@dataclass(frozen=True)
class IndexedRatings:
    """The training table with dense user and film indices, numbered in order of first appearance
    (Surprise's inner ids): what ALS reads, and the rows of the npz arrays."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    @classmethod
    def of(cls, ratings: pd.DataFrame) -> IndexedRatings:
        users, user_ids = pd.factorize(ratings["user_id"].astype(str))
        items, item_ids = pd.factorize(ratings["tmdb_id"].astype("int64"))
        return cls(
            user_ids=np.asarray(user_ids, dtype=str),
            item_ids=np.asarray(item_ids, dtype=np.int64),
            users=users.astype(np.int32),
            items=items.astype(np.int32),
            ratings=ratings["rating"].to_numpy(dtype=np.float64),
        )

    def table(self, folds: np.ndarray | None = None) -> pd.DataFrame:
        """What Spark receives: ``user``, ``item`` (int32 indices), ``rating`` (and ``fold``)."""
        frame = pd.DataFrame({"user": self.users, "item": self.items, "rating": self.ratings})
        if folds is not None:
            frame["fold"] = folds.astype(np.int32)
        return frame

    def seen(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of the films each user rated (``seen_indptr``, ``seen_indices``), sorted within a user."""
        order = np.lexsort((self.items, self.users))
        counts = np.bincount(self.users, minlength=len(self.user_ids))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.items[order].astype(np.int32)


@contextmanager
def handed_to_spark(spark: SparkSession, frame: pd.DataFrame, staging_root: Path | None) -> Iterator[DataFrame]:
    """``frame`` as a cached Spark DataFrame, sent the way the engine reads it: with a
    ``staging_root`` (Spark embedded here), a parquet file Spark reads from this disk; without
    (a cluster that cannot see this machine's files), Arrow batches from this process (Spark
    Connect streams them over gRPC, a standalone driver ships them to its executors). The staging
    file is deleted and the cache released on exit."""
    with tempfile.TemporaryDirectory(dir=staging_root, prefix="spark-input-") if staging_root else _nothing() as tmp:
        if tmp:
            path = Path(tmp) / "ratings.parquet"
            frame.to_parquet(path, index=False)
            handed = spark.read.parquet(str(path))
        else:
            handed = spark.createDataFrame(frame)
        handed = handed.cache()
        with releasing(handed.unpersist):
            handed.count()  # read it now, while the staging file exists
            yield handed


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@dataclass(frozen=True)
class FittedALS:
    """A fit: the global mean, the Spark ALS model of the residuals, and the bias tables."""

    global_mean: float
    model: Any
    user_bias: DataFrame
    item_bias: DataFrame

    def release(self) -> None:
        self.user_bias.unpersist()
        self.item_bias.unpersist()


def fit(ratings: DataFrame, params: ALSParams) -> FittedALS:
    """Baseline biases, then ALS on the residuals, of ``ratings`` (user, item, rating)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    if params.num_blocks < 1:
        raise ValueError("resolve num_blocks first (ALSParams.resolved)")
    mu = float(ratings.agg(F.avg("rating")).first()[0])
    item_bias = (
        ratings.groupBy("item")
        .agg((F.sum(F.col("rating") - mu) / (F.count("*") + params.reg_item_bias)).alias("item_bias"))
        .cache()
    )
    user_bias = (
        ratings.join(item_bias, "item")
        .groupBy("user")
        .agg(
            (F.sum(F.col("rating") - mu - F.col("item_bias")) / (F.count("*") + params.reg_user_bias)).alias(
                "user_bias"
            )
        )
        .cache()
    )
    residuals = (
        ratings.join(item_bias, "item")
        .join(user_bias, "user")
        .select("user", "item", (F.col("rating") - mu - F.col("user_bias") - F.col("item_bias")).alias("residual"))
    )
    als = ALS(
        rank=params.rank,
        maxIter=params.max_iter,
        regParam=params.reg_param,
        seed=params.seed,
        numUserBlocks=params.num_blocks,
        numItemBlocks=params.num_blocks,
        userCol="user",
        itemCol="item",
        ratingCol="residual",
        coldStartStrategy="nan",
    )
    return FittedALS(mu, als.fit(residuals), user_bias, item_bias)


def score(fitted: FittedALS, pairs: DataFrame) -> DataFrame:
    """``pairs`` (user, item, …) with ``prediction = mu + b_u + b_i + transform`` (unclipped; a
    term is 0 for an unknown user or film)."""
    from pyspark.sql import functions as F

    factor = F.when(F.isnan("prediction") | F.col("prediction").isNull(), 0.0).otherwise(F.col("prediction"))
    return (
        fitted.model.transform(pairs)
        .join(fitted.user_bias, "user", "left")
        .join(fitted.item_bias, "item", "left")
        .withColumn(
            "prediction",
            F.lit(fitted.global_mean)
            + F.coalesce(F.col("user_bias"), F.lit(0.0))
            + F.coalesce(F.col("item_bias"), F.lit(0.0))
            + factor.cast("double"),
        )
        .drop("user_bias", "item_bias")
    )


def model_arrays(fitted: FittedALS, indexed: IndexedRatings, titles: pd.DataFrame | None = None) -> ModelArrays:
    """The fit as ``cf_model.npz`` arrays, rows in ``indexed``'s order."""
    n_users, n_items, rank = len(indexed.user_ids), len(indexed.item_ids), fitted.model.rank
    indptr, indices = indexed.seen()
    return ModelArrays.from_factors(
        user_ids=indexed.user_ids,
        item_ids=indexed.item_ids,
        global_mean=fitted.global_mean,
        bu=_rows(fitted.user_bias.toPandas(), "user", "user_bias", n_users, "user biases"),
        bi=_rows(fitted.item_bias.toPandas(), "item", "item_bias", n_items, "film biases"),
        pu=_rows(fitted.model.userFactors.toPandas(), "id", "features", n_users, "user factors", rank),
        qi=_rows(fitted.model.itemFactors.toPandas(), "id", "features", n_items, "film factors", rank),
        seen_indptr=indptr,
        seen_indices=indices,
        rating_scale=np.array(RATING_SCALE, dtype=np.float64),
        titles=titles,
    )


def _rows(frame: pd.DataFrame, key: str, value: str, n: int, what: str, width: int | None = None) -> np.ndarray:
    """Spark's (index, value) rows as a dense float64 array; every index must be there once."""
    index = frame[key].to_numpy(dtype=np.int64)
    if len(index) != n or len(np.unique(index)) != n or (n and (index.min() < 0 or index.max() >= n)):
        raise ValueError(f"Spark returned {len(index)} {what} for {n} rows of the training table")
    out = np.empty((n, width) if width else n, dtype=np.float64)
    out[index] = np.stack(frame[value].to_numpy()).astype(np.float64) if width else frame[value].to_numpy(np.float64)
    return out


def sanity_prediction_of(arrays: ModelArrays) -> dict[str, Any]:
    """The most active user's clipped prediction of the most-rated film (what
    ``training.sanity_prediction`` records for a Surprise model)."""
    user = int(np.diff(arrays.seen_indptr).argmax())
    item = int(np.bincount(arrays.seen_indices, minlength=arrays.n_items).argmax())
    raw = float(arrays.global_mean + arrays.bu[user] + arrays.bi[item] + arrays.qi[item] @ arrays.pu[user])
    estimate = float(np.clip(raw, *arrays.rating_scale))
    return {
        "user_id": str(arrays.user_ids[user]),
        "tmdb_id": int(arrays.item_ids[item]),
        "estimate": round(estimate, 4),
    }


def surprise_folds(n_ratings: int, n_folds: int, seed: int) -> np.ndarray:
    """Each row's fold, cut as ``surprise.model_selection.KFold(n_folds, random_state=seed,
    shuffle=True)`` cuts the same table: both trainers are tested on the same held-out ratings."""
    if not 2 <= n_folds <= n_ratings:
        raise ValueError(f"n_folds must be between 2 and the number of ratings ({n_ratings}), got {n_folds}")
    order = np.arange(n_ratings)
    np.random.RandomState(seed).shuffle(order)
    folds, stop = np.empty(n_ratings, dtype=np.int32), 0
    for fold in range(n_folds):
        start, stop = stop, stop + n_ratings // n_folds + (1 if fold < n_ratings % n_folds else 0)
        folds[order[start:stop]] = fold
    return folds


_Prediction = namedtuple("_Prediction", "uid iid r_ui est")


def cross_validate(
    table: DataFrame,
    params: ALSParams,
    n_folds: int,
    k: int = DEFAULT_K,
    relevance_threshold: float = RELEVANCE_THRESHOLD,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Per-fold RMSE, MAE, precision@k, NDCG@k and fit seconds of ``table`` (user, item, rating,
    fold): the same keys, in the same order, as ``training.cross_validate_svd``; ``on_fold(i,
    metrics)`` as each fold is done."""
    from pyspark.sql import functions as F

    results = []
    for fold in range(n_folds):
        started = time.perf_counter()
        fitted = fit(table.filter(F.col("fold") != fold).select("user", "item", "rating"), params)
        fit_seconds = time.perf_counter() - started
        with releasing(fitted.release):
            held_out = table.filter(F.col("fold") == fold).select("user", "item", "rating")
            predicted = score(fitted, held_out).select("user", "rating", "prediction").toPandas()
        results.append(fold_metrics(predicted, k, relevance_threshold, fit_seconds))
        if on_fold is not None:
            on_fold(fold + 1, results[-1])
    return results


def fold_metrics(predicted: pd.DataFrame, k: int, threshold: float, fit_seconds: float) -> dict[str, float]:
    """Metrics of one fold's (user, rating, prediction), predictions clipped to the scale."""
    estimates = np.clip(predicted["prediction"].to_numpy(dtype=np.float64), *RATING_SCALE)
    truth = predicted["rating"].to_numpy(dtype=np.float64)
    errors = estimates - truth
    ranked = ranking_metrics(
        (_Prediction(u, None, t, e) for u, t, e in zip(predicted["user"].tolist(), truth.tolist(), estimates.tolist())),
        k=k,
        threshold=threshold,
    )
    metrics = {
        "rmse": math.sqrt(float(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        precision_at(k): ranked["precision_at_k"],
        ndcg_at(k): ranked["ndcg_at_k"],
        "fit_seconds": fit_seconds,
    }
    return {name: float(value) for name, value in metrics.items()}


@dataclass(frozen=True)
class SparkFit:
    """A fitted version's arrays, the params it used (blocks resolved) and the time each part took."""

    arrays: ModelArrays
    params: ALSParams
    handoff: str
    """``parquet`` (a file Spark read from this disk) or ``arrow`` (batches sent by this process)."""
    handoff_seconds: float
    fit_seconds: float


def fit_table(
    spark: SparkSession,
    ratings: pd.DataFrame,
    params: ALSParams,
    titles: pd.DataFrame | None = None,
    staging_root: Path | None = None,
) -> SparkFit:
    """Fit on every rating of the training table; ``staging_root``: see :func:`handed_to_spark`."""
    indexed = IndexedRatings.of(ratings)
    params = params.resolved(spark)
    started = time.perf_counter()
    with handed_to_spark(spark, indexed.table(), staging_root) as table:
        handoff_seconds = time.perf_counter() - started
        started = time.perf_counter()
        fitted = fit(table, params)
        fit_seconds = time.perf_counter() - started
        with releasing(fitted.release):
            arrays = model_arrays(fitted, indexed, titles)
    return SparkFit(arrays, params, "parquet" if staging_root else "arrow", handoff_seconds, fit_seconds)


def cross_validate_table(
    spark: SparkSession,
    ratings: pd.DataFrame,
    params: ALSParams,
    n_folds: int = 3,
    seed: int = 42,
    k: int = DEFAULT_K,
    staging_root: Path | None = None,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """K-fold CV of the training table on Spark, on the folds Surprise would cut."""
    folds = surprise_folds(len(ratings), n_folds, seed)
    indexed = IndexedRatings.of(ratings)
    with handed_to_spark(spark, indexed.table(folds), staging_root) as table:
        return cross_validate(table, params.resolved(spark), n_folds, k, on_fold=on_fold)
