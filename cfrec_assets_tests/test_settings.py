"""settings.py is the one declaration of the environment: every variable read is declared there,
with the defaults the code uses, and the alert/driver scrubber hides every secret it declares."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from cfrec_assets.defs import resources, sensors
from cfrec_assets.defs.assets import ratings
from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.settings import BY_NAME, SETTINGS, scrub

REPO = Path(__file__).resolve().parents[1]
# A variable's name where it is read: a Python string, ${NAME} in a shell script, `env: NAME` in YAML.
READ = re.compile(
    r"""["'](?P<py>(?:CFREC|SUPABASE|DAGSTER)_[A-Z0-9_]+)["']|\$\{(?P<sh>[A-Z0-9_]+)|env:\s*(?P<yaml>[A-Z0-9_]+)"""
)
NOT_OURS = {"DAGSTER_HOME"}  # Dagster's own


def test_every_variable_the_project_reads_is_declared_once() -> None:
    sources = [*(REPO / "cfrec_assets").rglob("*.py"), *(REPO / "deploy").iterdir()]
    read = {
        name
        for path in sources
        if path.is_file()
        for match in READ.finditer(path.read_text())
        for name in match.groups()
        if name
    } - NOT_OURS
    assert read, "the pattern found no variable at all"
    assert not read - set(BY_NAME), f"read but not declared in cfrec_assets/settings.py: {sorted(read - set(BY_NAME))}"
    assert len(BY_NAME) == len(SETTINGS)


def test_declared_defaults_are_the_ones_the_code_uses() -> None:
    default = {name: setting.default for name, setting in BY_NAME.items()}
    assert default["CFREC_MOVIELENS_BASE_URL"] == resources.GROUPLENS_BASE_URL
    assert default["CFREC_ML_LATEST_RELEASE"] == movielens.DEFAULT_ML_LATEST_RELEASE
    assert default["CFREC_SEEDS"] == ratings.DEFAULT_SEEDS
    assert default["CFREC_RETRAIN_MIN_NEW_RATINGS"] == str(sensors.DEFAULT_MIN_NEW_RATINGS)
    assert default["CFREC_RETRAIN_MAX_AGE_SECONDS"] == str(sensors.DEFAULT_MAX_AGE_SECONDS)
    assert default["CFREC_RETRAIN_INTERVAL_SECONDS"] == str(sensors.DEFAULT_INTERVAL_SECONDS)


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
