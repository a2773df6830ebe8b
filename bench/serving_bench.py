"""Benchmark serving on a model trained on the real data: top-10 for every user, deploy, load.

Usage: ``python bench/serving_bench.py [--repeat R] [--datasets DIR] [--n N]``

The model is trained with the project's own functions (MovieLens 100K mapped to TMDB ids,
``combine_ratings``, ``fit_svd`` with the asset's default hyper-parameters), saved with
``save_artifacts`` and promoted into a temporary serving directory. Measured, as medians
over ``--repeat`` runs:

1. top-N for every user: ``DeployedModel.recommend`` against Surprise's documented path
   (``build_anti_testset`` + ``algo.test`` + a sort per user), and whether they agree;
2. ``promote`` of a new version, ``rollback``, and ``load_deployed`` (sha256 verify + the
   pickle-free ``cf_model.npz``) against the pickle loader (sha256 verify + unpickle, what
   ``load_deployed`` did before the npz) and a plain ``joblib.load`` of the two pickles;
3. resident memory of each loader, one fresh child process per loader (VmRSS after the load
   minus VmRSS after the imports, and peak VmHWM), medians over ``--repeat`` children.

DIR holds ``movielens/ml-100k.zip`` and ``movielens/ml-latest-small.zip`` (default:
``$CFREC_SHARED_DATASETS`` or ``../shared/datasets`` beside the repository). Everything is
written to a temporary folder that is removed afterwards; nothing lands in the repository.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import surprise
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
    positive_int,
    timed,
)

from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.pipeline.combine import combine_ratings, empty_app_ratings
from cfrec_assets.pipeline.tmdb_mapping import build_tmdb_mapping, load_overrides
from cfrec_assets.pipeline.training import SVDParams, fit_svd, save_artifacts
from cfrec_serving.artifacts import ARTIFACT_FILES, MODEL_FILE, PICKLE_FILES, SERVING_FILE, TRAINSET_FILE
from cfrec_serving.loader import DeployedModel, load_deployed, load_version
from cfrec_serving.storage import sha256_file
from cfrec_serving.targets.manifest import Promotion
from cfrec_serving.targets.target import open_target

AGREEMENT_SAMPLE = 200


def interleaved(works: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Wall seconds of each work, run in turn ``repeat`` times."""
    seconds: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeat):
        for name, work in works.items():
            seconds[name].append(timed(work, 1)[0][0])
    return seconds


def train_on_real_data(datasets: Path, scratch: Path) -> tuple[Path, dict]:
    """Fit the production model on ML-100K (TMDB ids, no app ratings); return its version folder."""
    folder = scratch / "movielens"
    for archive, members in (
        (movielens.ML100K_ARCHIVE, movielens.ML100K_MEMBERS),
        (movielens.ML_LATEST_ARCHIVE, movielens.ML_LATEST_MEMBERS),
    ):
        with zipfile.ZipFile(datasets / archive) as bundle:
            bundle.extractall(folder, members=members)
    items = movielens.parse_u_item(folder / "ml-100k/u.item")
    ratings = movielens.parse_u_data(folder / "ml-100k/u.data")
    mapping = build_tmdb_mapping(
        items,
        movielens.parse_links(folder / "ml-latest-small/links.csv"),
        movielens.parse_movies(folder / "ml-latest-small/movies.csv"),
        load_overrides(),
    )
    combined, _ = combine_ratings(ratings, mapping, empty_app_ratings())
    algo, trainset, fit_seconds = fit_svd(combined, SVDParams())
    save_artifacts(algo, trainset, combined, scratch / "models", "trained")
    info = {"ratings": len(combined), "users": trainset.n_users, "movies": trainset.n_items, "fit_seconds": fit_seconds}
    return scratch / "models" / "trained", info


def surprise_top_n(algo: surprise.SVD, trainset: surprise.Trainset, n: int) -> dict[str, list[tuple[int, float]]]:
    """Surprise's FAQ recipe: predict every unrated pair, sort each user's list by estimate."""
    predictions = algo.test(trainset.build_anti_testset())
    per_user: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for uid, iid, _, est, _ in predictions:
        per_user[uid].append((iid, est))
    return {uid: sorted(pairs, key=lambda p: p[1], reverse=True)[:n] for uid, pairs in per_user.items()}


def unclipped_reference(algo: surprise.SVD, trainset: surprise.Trainset, user: str, n: int) -> list[int]:
    """Surprise's own unclipped estimates, ties by tmdb id: the ranking ``recommend`` promises."""
    inner = trainset.to_inner_uid(user)
    seen = {i for i, _ in trainset.ur[inner]}
    scored = [
        (-algo.predict(user, trainset.to_raw_iid(i), clip=False).est, trainset.to_raw_iid(i))
        for i in trainset.all_items()
        if i not in seen
    ]
    return [iid for _, iid in sorted(scored)[:n]]


def bench_top_n(model: DeployedModel, algo: surprise.SVD, trainset: surprise.Trainset, n: int, repeat: int) -> None:
    users = [trainset.to_raw_uid(u) for u in trainset.all_users()]
    fast_s, fast = timed(lambda: {u: list(model.recommend(u, n).items) for u in users}, repeat)
    slow_s, slow = timed(lambda: surprise_top_n(algo, trainset, n), repeat)
    fast_med, slow_med = statistics.median(fast_s), statistics.median(slow_s)

    slow_ids = {u: [iid for iid, _ in slow[u]] for u in users}
    exact = sum(fast[u] == slow_ids[u] for u in users)
    same_set = sum(set(fast[u]) == set(slow_ids[u]) for u in users)
    # Estimates clipped to the scale's top tie, and a stable sort keeps them in trainset order.
    top = trainset.rating_scale[1]
    clipped_ties = {u for u in users if sum(est >= top for _, est in slow[u]) >= 2}
    explained = all(u in clipped_ties for u in users if fast[u] != slow_ids[u])
    rng = np.random.default_rng(0)
    sample = rng.choice(users, size=min(AGREEMENT_SAMPLE, len(users)), replace=False)
    reference_agree = sum(fast[u] == unclipped_reference(algo, trainset, u, n) for u in sample)

    print(f"\n== top-{n} for every user ({len(users)} users x {trainset.n_items} movies), median of {repeat}")
    print("\n| path | total s | per user ms | runs (s) |")
    print("|---|---:|---:|---|")
    print(
        f"| DeployedModel.recommend (vectorised) | {fast_med:.3f} | {1000 * fast_med / len(users):.3f} | "
        f"{', '.join(f'{s:.3f}' for s in fast_s)} |"
    )
    print(
        f"| Surprise: build_anti_testset + algo.test + sort | {slow_med:.2f} | "
        f"{1000 * slow_med / len(users):.2f} | {', '.join(f'{s:.2f}' for s in slow_s)} |"
    )
    print(f"\nspeed-up: {slow_med / fast_med:.0f}x")
    print(
        f"agreement with the Surprise path, all {len(users)} users: identical ordered top-{n} "
        f"{exact}/{len(users)}, same set {same_set}/{len(users)}"
    )
    print(
        f"agreement with Surprise's unclipped estimates (ties by tmdb id), {len(sample)} sampled users: "
        f"{reference_agree}/{len(sample)}"
    )
    if exact < len(users):
        print(
            f"every difference is {'' if explained else 'NOT '}among the {len(clipped_ties)} users with "
            f"2+ top-{n} estimates clipped to {top:g}: the FAQ path sorts clipped estimates, so those tie "
            "and keep trainset order, while recommend ranks the unclipped scores"
        )


def bench_deployment(source: Path, scratch: Path, repeat: int) -> None:
    serving = scratch / "serving"
    megabytes = sum((source / name).stat().st_size for name in ARTIFACT_FILES) / 1e6
    versions = [f"v{i:03d}" for i in range(repeat + 1)]
    pending = iter(versions)
    trained_at = datetime.now(timezone.utc)

    target = open_target(serving)

    def promote_next() -> None:
        target.promote(
            source,
            Promotion(version=next(pending), metrics={"rmse_mean": 0.93}, counts={"ratings": 1}, trained_at=trained_at),
        )

    promote_next()  # a champion first, so every timed promote replaces one, as in production
    promote_s, _ = timed(promote_next, repeat)
    # Alternate between the last two versions so every rollback really moves the manifest.
    targets = itertools.cycle([versions[-2], versions[-1]])
    rollback_s, _ = timed(lambda: target.rollback(next(targets)), repeat)
    # Interleaved, so the load of other processes on the machine hits both sides alike.
    loads = interleaved(
        {
            "load_deployed": lambda: load_deployed(serving),
            "pickle_loader": lambda: load_pickles(serving),
            "joblib": lambda: [joblib.load(source / name) for name in PICKLE_FILES],
            "sha256": lambda: [sha256_file(source / name) for name in PICKLE_FILES],
        },
        repeat,
    )
    load_s, pickle_s, joblib_s, hash_s = (
        loads["load_deployed"],
        loads["pickle_loader"],
        loads["joblib"],
        loads["sha256"],
    )

    print(
        f"\n== deployment of a {megabytes:.1f} MB version "
        f"({MODEL_FILE} {(source / MODEL_FILE).stat().st_size / 1e6:.1f} MB, "
        f"{TRAINSET_FILE} {(source / TRAINSET_FILE).stat().st_size / 1e6:.1f} MB, "
        f"{SERVING_FILE} {(source / SERVING_FILE).stat().st_size / 1e6:.1f} MB), median of {repeat}"
    )
    print("\n| operation | median ms | runs (ms) |")
    print("|---|---:|---|")
    rows = [
        ("promote (hash, copy, fsync, re-hash, manifest)", promote_s),
        ("rollback (re-verify sha256, manifest)", rollback_s),
        ("load_deployed (sha256 verify + cf_model.npz, allow_pickle=False, + index)", load_s),
        ("pickle loader (sha256 verify + unpickle both pickles + index)", pickle_s),
        ("baseline: joblib.load of both pickles", joblib_s),
        ("of which: sha256 of both pickles", hash_s),
    ]
    for label, seconds in rows:
        print(
            f"| {label} | {1000 * statistics.median(seconds):.1f} | {', '.join(f'{1000 * s:.1f}' for s in seconds)} |"
        )
    print(
        f"\nnpz load_deployed / pickle loader: {statistics.median(load_s) / statistics.median(pickle_s):.2f}x; "
        f"/ plain joblib.load: {statistics.median(load_s) / statistics.median(joblib_s):.2f}x "
        f"(interleaved runs, warm page cache)"
    )
    print("\n| loader (fresh process each) | RSS added by the load, MB | peak RSS, MB |")
    print("|---|---:|---:|")
    for loader in ("npz", "pickle"):
        added, peak = zip(*(child_rss(loader, serving) for _ in range(repeat)))
        print(f"| {loader} | {statistics.median(added):.1f} | {statistics.median(peak):.1f} |")


def load_pickles(serving: Path) -> DeployedModel:
    """What load_deployed did before cf_model.npz: verified pickles, unpickled."""
    manifest = json.loads((serving / "manifest.json").read_text())
    pickles = {name: manifest["files"][name] for name in PICKLE_FILES}
    return load_version(serving / "versions" / manifest["version"], pickles, manifest, allow_pickle=True)


_CHILD = """
import json, sys
from pathlib import Path
from cfrec_serving.loader import load_deployed, load_version

def rss(field):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field)) / 1024

loader, serving = sys.argv[1], Path(sys.argv[2])
before = rss('VmRSS:')
if loader == 'npz':
    model = load_deployed(serving)
else:
    manifest = json.loads((serving / 'manifest.json').read_text())
    pickles = {n: manifest['files'][n] for n in ('svd_model.pkl', 'cf_trainset.pkl')}
    model = load_version(serving / 'versions' / manifest['version'], pickles, manifest, allow_pickle=True)
print(rss('VmRSS:') - before, rss('VmHWM:'))
"""


def child_rss(loader: str, serving: Path) -> tuple[float, float]:
    """(MB of resident memory the load added, peak MB) in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, loader, str(serving)], check=True, capture_output=True, text=True
    )
    added, peak = done.stdout.split()
    return float(added), float(peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--n", type=positive_int, default=10, help="recommendations per user")
    args = parse_real_data_args(parser, argv, "serving_bench.py", surprise=surprise.__version__, numpy=np.__version__)
    datasets = args.datasets / "movielens"
    with tempfile.TemporaryDirectory(prefix="cfrec-serving-bench-") as scratch:
        version, info = train_on_real_data(datasets, Path(scratch))
        print(
            f"trained on {info['ratings']:,} ratings ({info['users']} users, {info['movies']} movies) "
            f"in {info['fit_seconds']:.1f} s"
        )
        algo, trainset = (joblib.load(version / name) for name in PICKLE_FILES)
        bench_deployment(version, Path(scratch), args.repeat)
        bench_top_n(load_deployed(Path(scratch) / "serving"), algo, trainset, args.n, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
