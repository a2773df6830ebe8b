"""The settings modules are the one declaration of the environment: every variable read is
declared there (the app's in cfrec_serving/settings.py, the rest in cfrec_assets/settings.py), read
through that declaration and never at import, with the defaults the code uses; the alert/driver
scrubber hides every secret they declare."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest

from cfrec_assets import settings
from cfrec_assets.definitions import build_defs
from cfrec_assets.defs.resources import DataStore, MovieLensSource
from cfrec_assets.defs.supabase_io.table import RatingsTableSettings
from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.schema import DEFAULT_SEEDS
from cfrec_assets.settings import BY_NAME, SETTINGS, SettingError, scrub
from cfrec_serving import settings as serving_settings
from cfrec_serving.cli import build_parser
from cfrec_serving.loader import default_cache_dir

REPO = Path(__file__).resolve().parents[1]
CODE = [*(REPO / "cfrec_assets").rglob("*.py"), *(REPO / "serving" / "cfrec_serving").rglob("*.py")]
# A variable's name where it is read: a Python string, ${NAME} in a shell script, `env: NAME` in YAML.
READ = re.compile(
    r"""["'](?P<py>(?:CFREC|SUPABASE|DAGSTER)_[A-Z0-9_]+)["']|\$\{(?P<sh>[A-Z0-9_]+)|env:\s*(?P<yaml>[A-Z0-9_]+)"""
)
NOT_OURS = {"DAGSTER_HOME"}  # Dagster's own
# Python that looks a variable up in an environment, wherever it comes from.
LOOKUP = re.compile(r"environ\b(?:\.get\(|\[)|getenv\(")
SETTINGS_MODULES = {REPO / "cfrec_assets" / "settings.py", REPO / "serving" / "cfrec_serving" / "settings.py"}
# Not cfrec's: the operating system's (loader.default_cache_dir), Java's and pyspark's (pipeline/spark/session.py).
OS_VARIABLES = ("XDG_CACHE_HOME", "HOME", "JAVA_HOME", "PATH", "SPARK_CONNECT_MODE_ENABLED")


def test_every_variable_the_project_reads_is_declared_once() -> None:
    sources = [*CODE, *(REPO / "deploy").iterdir()]
    read = {
        name
        for path in sources
        if path.is_file()
        for match in READ.finditer(path.read_text())
        for name in match.groups()
        if name
    } - NOT_OURS
    assert read, "the pattern found no variable at all"
    assert not read - set(BY_NAME), f"read but not declared in a settings module: {sorted(read - set(BY_NAME))}"
    assert len(BY_NAME) == len(SETTINGS)


def test_the_app_declares_its_own_variables_and_the_pipeline_lists_them() -> None:
    app = {setting.name for setting in serving_settings.SERVING_SETTINGS}
    assert {"CFREC_SERVING_URL", "CFREC_SERVING_DIR", "CFREC_DATA_DIR", "CFREC_MODEL_CACHE_DIR"} <= app
    assert {"CFREC_S3_ENDPOINT_URL", "CFREC_S3_REGION", "CFREC_S3_ACCESS_KEY_ID", "CFREC_S3_SECRET_ACCESS_KEY"} <= app
    assert set(serving_settings.SERVING_SETTINGS) <= set(SETTINGS)
    assert not app & {setting.name for setting in settings.PIPELINE_SETTINGS}


def test_variables_are_read_only_through_their_declaration() -> None:
    lookups = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in CODE
        if path not in SETTINGS_MODULES
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if LOOKUP.search(line) and not any(f'"{name}"' in line for name in OS_VARIABLES)
    ]
    assert not lookups, "read the environment through cfrec_assets.settings / cfrec_serving.settings:\n" + "\n".join(
        lookups
    )


def test_declared_defaults_are_the_ones_the_code_uses() -> None:
    assert MovieLensSource().base_url == settings.MOVIELENS_BASE_URL.default
    assert MovieLensSource().latest_release == settings.ML_LATEST_RELEASE.default == movielens.DEFAULT_ML_LATEST_RELEASE
    assert settings.SEEDS.default == DEFAULT_SEEDS
    assert RatingsTableSettings().table == settings.SUPABASE_RATINGS_TABLE.default
    assert DataStore().data_dir == serving_settings.DATA_DIR.default


def test_the_code_location_reads_the_environment_it_is_given_not_the_process_one(monkeypatch) -> None:
    for name in ("CFREC_TUNING_SCHEDULE", "CFREC_FRESHNESS_HOURS", "CFREC_RECOMMENDATIONS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    environ = {
        "CFREC_TUNING_SCHEDULE": "running",
        "CFREC_RETRAIN_SENSOR": "RUNNING",
        "CFREC_RETRAIN_INTERVAL_SECONDS": "90",
        "CFREC_FRESHNESS_HOURS": "12",
        "CFREC_ALERT_WEBHOOK_URL": "https://hooks.example/T/B/secret",
        "CFREC_RECOMMENDATIONS_TABLE": "user_recommendations",
        "CFREC_SERVING_URL": "s3://bucket/models",
    }
    repo = build_defs(environ).get_repository_def()
    assert [s.default_status for s in repo.schedule_defs] == [dg.DefaultScheduleStatus.RUNNING]
    sensors = {s.name: s for s in repo.sensor_defs}
    assert sensors["supabase_ratings_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["supabase_ratings_sensor"].minimum_interval_seconds == 90
    assert sensors["run_failure_alert"].default_status == dg.DefaultSensorStatus.RUNNING
    policy = repo.asset_graph.get(dg.AssetKey("deployed_model")).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 12 * 3600
    assert repo.asset_graph.has(dg.AssetKey("user_recommendations"))
    # The process's environment has none of them: the same build without the mapping is off.
    default = build_defs().get_repository_def()
    assert [s.default_status for s in default.schedule_defs] == [dg.DefaultScheduleStatus.STOPPED]
    assert not default.asset_graph.has(dg.AssetKey("user_recommendations"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CFREC_RETRAIN_MIN_NEW_RATINGS", "fifty"),
        ("CFREC_RETRAIN_INTERVAL_SECONDS", "0"),
        ("CFREC_RETRAIN_MAX_AGE_SECONDS", "1.5"),
        ("CFREC_FRESHNESS_HOURS", "nan"),
        ("CFREC_FRESHNESS_HOURS", "-48"),
    ],
)
def test_a_number_setting_that_is_not_one_is_refused_naming_the_variable(name, value) -> None:
    with pytest.raises(SettingError, match=f"^{name} must be .* above 0, got '{re.escape(value)}'$"):
        build_defs({name: value})


def test_an_empty_variable_counts_as_unset() -> None:
    assert settings.FRESHNESS_HOURS.read({"CFREC_FRESHNESS_HOURS": ""}) == "48"
    assert not settings.RECOMMENDATIONS_TABLE.is_set({"CFREC_RECOMMENDATIONS_TABLE": ""})


def test_the_app_side_reads_its_settings_from_the_environment_it_is_given(tmp_path) -> None:
    parser = build_parser({"CFREC_SERVING_URL": "s3://bucket/models", "CFREC_SERVING_DIR": str(tmp_path)})
    assert parser.parse_args(["deployments"]).serving_dir == "s3://bucket/models"
    parser = build_parser({"CFREC_DATA_DIR": str(tmp_path)})
    assert parser.parse_args(["deployments"]).serving_dir == str(tmp_path / "serving")
    assert default_cache_dir({"CFREC_MODEL_CACHE_DIR": str(tmp_path)}) == tmp_path


def test_scrub_hides_every_declared_secret_in_every_spelling_even_with_a_trailing_newline() -> None:
    environ: dict[str, str] = {}
    secrets: list[str] = []
    for index, setting in enumerate(SETTINGS):
        if setting.secret:
            value = f"{setting.name.lower()}+Secret/{index}"
            secrets.append(value)
        elif setting.url:
            password = f"pw{index}-{setting.name.lower()}"
            value = f"https://user{index}:{password}@host{index}.example:9000/x"
            secrets += [password, f"user{index}:"]
        else:
            continue
        environ[setting.name] = value + "\n"  # pasted from a file with its newline
    assert {"CFREC_S3_ACCESS_KEY_ID", "CFREC_S3_SECRET_ACCESS_KEY", "CFREC_S3_ENDPOINT_URL"} <= set(environ)
    # How an error may quote them: whole, percent-encoded, URLs with a path appended.
    text = " | ".join(
        f"{value.strip()} {quote(value.strip(), safe='')} {value.strip()}/bucket/key" for value in environ.values()
    )
    scrubbed = scrub(text, environ)
    for secret in secrets:
        assert secret not in scrubbed and quote(secret, safe="") not in scrubbed, (secret, scrubbed)
    assert "host3.example:9000" in scrub("https://host3.example:9000/x", environ)


def test_scrub_removes_the_userinfo_of_any_url_and_leaves_plain_words() -> None:
    text = 'PUT https://minio:s3cr3t@s3.internal:9000/b/k failed; user "postgres" on postgresql://db/app'
    assert scrub(text, {}) == 'PUT https://s3.internal:9000/b/k failed; user "postgres" on postgresql://db/app'
