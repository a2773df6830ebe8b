"""Command line access to the deployed model.

    python -m cfrec_assets recommend --user ml_196 -n 10
    python -m cfrec_assets predict --user ml_196 --movie 862
    python -m cfrec_assets deployments

``recommend`` and ``predict`` name each film ("Toy Story (1995)") next to its TMDB id when the
model artifact has its title (films only the app's users rated show the id alone).
Every command takes ``--serving-dir`` (a folder or ``s3://bucket/prefix`` with ``CFREC_S3_*`` from
the environment; default: ``$CFREC_SERVING_URL``, ``$CFREC_SERVING_DIR``, else
``$CFREC_DATA_DIR/serving``, else ``data/serving``, as the pipeline resolves it) and ``--json``.

Exit codes: 0 ok, 1 nothing deployed, 2 usage error, 3 the deployment failed verification,
4 the serving target could not be reached (S3 endpoint down, credentials refused, no such
bucket), 5 ``predict``: the film is not in the model (no training rating covers it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from cfrec_serving.settings import serving_location

EXIT_NOT_DEPLOYED = 1
EXIT_VERIFICATION_FAILED = 3
EXIT_TARGET_UNAVAILABLE = 4
EXIT_NOT_IN_MODEL = 5


class FilmNotInModelError(LookupError):
    """``predict`` was asked about a film the model never saw: any number would be made up."""


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser; ``--serving-dir``'s default is read from ``environ`` (the process's by default)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--serving-dir",
        default=serving_location(environ),
        help="serving folder or s3://bucket/prefix holding manifest.json (default: $CFREC_SERVING_URL, "
        "$CFREC_SERVING_DIR, $CFREC_DATA_DIR/serving or data/serving)",
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(prog="python -m cfrec_assets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recommend = commands.add_parser("recommend", parents=[common], help="top-N movies for a user")
    recommend.add_argument("--user", required=True, type=_user_id, help="user id, e.g. ml_196 or an app uuid")
    recommend.add_argument("-n", type=_positive_int, default=10, help="how many movies (default: %(default)s)")
    recommend.add_argument("--include-seen", action="store_true", help="keep movies the user already rated")
    predict = commands.add_parser("predict", parents=[common], help="predicted rating of one movie")
    predict.add_argument("--user", required=True, type=_user_id, help="user id")
    predict.add_argument("--movie", required=True, type=_tmdb_id, help="TMDB id of the movie")
    commands.add_parser("deployments", parents=[common], help="list deployed versions, marking the current one")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported late so --help stays fast and usage errors need no numpy/surprise.
    from cfrec_serving.loader import ArtifactVerificationError, NoDeployedModelError, ServingTargetUnavailableError
    from cfrec_serving.targets.manifest import DeploymentError, TargetUnavailableError

    try:
        output = _COMMANDS[args.command](args)
    except NoDeployedModelError as error:
        return _fail(f"{error}. Promote a model first (the deployed_model asset).", EXIT_NOT_DEPLOYED)
    except FilmNotInModelError as error:
        return _fail(str(error), EXIT_NOT_IN_MODEL)
    except (ServingTargetUnavailableError, TargetUnavailableError) as error:
        return _fail(f"cannot reach the serving target: {error}", EXIT_TARGET_UNAVAILABLE)
    except (ArtifactVerificationError, DeploymentError) as error:
        return _fail(f"refusing to serve: {error}", EXIT_VERIFICATION_FAILED)
    print(json.dumps(output[0], indent=2) if args.json else output[1])
    return 0


def _recommend(args: argparse.Namespace) -> tuple[Any, str]:
    from cfrec_serving.loader import load_deployed

    model = load_deployed(args.serving_dir)
    result = model.recommend(args.user, args.n, exclude_seen=not args.include_seen)
    titles = [model.describe(item) for item in result.items]
    lines = [f"Top {len(result.items)} movies for {result.user_id} (model {result.model_version})"]
    if result.fallback:
        lines.append(f"note: {result.fallback}: not in the model, showing the best-rated movies overall")
    lines += [
        f"{rank:>3}. {score:.2f}  tmdb {item:<8} {title}".rstrip()
        for rank, (item, score, title) in enumerate(zip(result.items, result.scores, titles), start=1)
    ]
    return {**result.to_dict(), "titles": titles}, "\n".join(lines)


def _predict(args: argparse.Namespace) -> tuple[Any, str]:
    from cfrec_serving.loader import load_deployed

    model = load_deployed(args.serving_dir)
    result = model.predict(args.user, args.movie)
    if result.fallback in ("unknown_movie", "unknown_user_and_movie"):
        raise FilmNotInModelError(
            f"tmdb {args.movie} is not in the model (version {model.version}, {model.n_movies:,} films): no "
            "training rating covers it, so there is no prediction. `recommend` lists films it can rank."
        )
    title = model.describe(result.tmdb_id)
    named = f"tmdb {result.tmdb_id}" + (f" {title}" if title else "")
    text = f"{result.user_id} -> {named}: predicted {result.rating:.2f} (model {model.version})"
    if result.fallback:  # unknown_user: what the app would show a new user, the film's learned average
        text += f"\nnote: {result.user_id} is not in the model: this is the film's average (unknown_user)"
    return {**asdict(result), "title": title, "model_version": model.version}, text


def _deployments(args: argparse.Namespace) -> tuple[Any, str]:
    from cfrec_serving.loader import open_target_from_env

    target = open_target_from_env(args.serving_dir)  # a folder, or s3://… with CFREC_S3_* from env
    manifest = target.read_manifest()
    versions = target.list_versions()
    if manifest is None and not versions:
        from cfrec_serving.loader import NoDeployedModelError
        from cfrec_serving.targets.manifest import nothing_deployed

        raise NoDeployedModelError(nothing_deployed(target.describe()))
    rows = [("", "version", "trained_at", "rmse_mean", "")]
    for entry in versions:
        marker = "*" if entry["current"] else ""
        if "error" in entry:
            rows.append((marker, entry["version"], "", "", f"unreadable: {entry['error']}"))
            continue
        rmse = entry.get("metrics", {}).get("rmse_mean")
        rmse_text = f"{rmse:.4f}" if isinstance(rmse, (int, float)) else "-"
        rows.append((marker, entry["version"], str(entry.get("trained_at", "?")), rmse_text, ""))
    lines = _aligned(rows)
    current = manifest["version"] if manifest else None
    previous = manifest.get("previous_version") if manifest else None
    lines.append(f"current: {current or 'none'}" + (f" (previous: {previous})" if previous else ""))
    return {"current": current, "manifest": manifest, "versions": versions}, "\n".join(lines)


def _aligned(rows: list[tuple[str, str, str, str, str]]) -> list[str]:
    """Each column as wide as its longest cell (versions and timestamps vary in length); the last
    one, an unreadable version's error, is left to run on."""
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{mark:<{width[0]}} {version:<{width[1]}} {trained:<{width[2]}} {rmse:>{width[3]}} {note}".rstrip()
        for mark, version, trained, rmse, note in rows
    ]


_COMMANDS = {"recommend": _recommend, "predict": _predict, "deployments": _deployments}


# argparse reports a type function's ValueError as "invalid <function name> value"; these raise
# ArgumentTypeError, whose text it prints as is: "argument -n: must be a whole number of at least 1, got 'abc'".
def _whole_number(what: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least 1, refused as "must be <what>, got …"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text if value is not None else repr(text)}")
        return value

    return parse


_positive_int = _whole_number("a whole number of at least 1")
_tmdb_id = _whole_number("a TMDB id (a whole number, e.g. 862)")


def _user_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a user (e.g. ml_196 or an app uuid), got {text!r}")
    return text


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
