"""Hostile inputs (issue 8): each is generated here, refused clearly, fast, leaking nothing.

Secrets in URLs and DSNs, zip bombs and lying zip headers, a cache that outlives a fixed
mirror, gzip-encoded and redirected downloads, and catalog pickles built to exhaust the CPU.
"""

from __future__ import annotations

import random

import pytest

from cfrec_assets.redact import REDACTED, dsn_password, redact_dsn_secrets, redact_url

# --- Secrets in URLs and DSNs (cases 1, 2 and 11) -------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@mirror.example:8443/ml/", "https://mirror.example:8443/ml/"),
        ("file://user:s3cret@/srv/ml/", "file:///srv/ml/"),
        ("http://user:s3cret@[::1]:8080/ml/", "http://[::1]:8080/ml/"),
        ("http://user:s3cret@[fe80::1%25eth0]/ml/", "http://[fe80::1%25eth0]/ml/"),
        ("postgresql://user:p@ss:w/rd@db.example:5432/app", "postgresql://db.example:5432/app"),
        ("postgresql+psycopg://user:s3cret@/app?host=/var/run/pg", "postgresql+psycopg:///app?host=/var/run/pg"),
        ("s3://key:s3cret@bucket/ml/", "s3://bucket/ml/"),
        ("https://user:s3cret@host:notaport/ml/", "https://host:notaport/ml/"),
        ("https://mirror.example/ml/", "https://mirror.example/ml/"),
        ("file:///srv/ml/ml-100k.zip", "file:///srv/ml/ml-100k.zip"),
        ("postgresql://db.example/app?user=u&password=s3cret", f"postgresql://db.example/app?user=u&password={REDACTED}"),
        ("host=db user=u password='s3 cr\\'et' dbname=app", f"host=db user=u password={REDACTED} dbname=app"),
    ],
)
def test_redact_url_drops_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_never_raises_and_never_shows_the_password() -> None:
    rng = random.Random(8)
    alphabet = "ab:/@[]%?#=' 1"
    for _ in range(3_000):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        url = f"{rng.choice(['http', 'file', 'x+y', ''])}://u:PW{junk}@host{junk}/p"
        assert "PW" not in redact_url(url), url
        redact_url(junk)


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        ("postgresql://user:p@ss:w/rd@db.example:5432/app", "p@ss:w/rd"),
        ("postgresql://user:p%40ss%3Aw%2Frd@db.example:5432/app", "p%40ss%3Aw%2Frd"),
        ("postgresql://user@db.example/app", None),
        ("host=db password='it\\'s s3cret' user=u", "it's s3cret"),
        ("host=db password=plain user=u", "plain"),
    ],
)
def test_dsn_password_is_split_at_the_last_at_before_the_host(dsn: str, password: str | None) -> None:
    assert dsn_password(dsn) == password


def test_dsn_scrub_removes_the_whole_password_in_every_spelling_and_nothing_else() -> None:
    dsn = "postgresql://user:p@ss:w/rd@db.example:5432/app"
    message = (
        f"connection to {dsn} failed: password 'p@ss:w/rd' rejected (sent p%40ss%3Aw%2Frd, "
        "p%40ss%3aw%2frd); passport of user p@ssenger unchanged"
    )
    scrubbed = redact_dsn_secrets(message, dsn)
    for fragment in ("p@ss:w/rd", "p%40ss%3Aw%2Frd", "p%40ss%3aw%2frd", "ss:w", "w/rd"):
        assert fragment not in scrubbed
    assert "postgresql://db.example:5432/app" in scrubbed
    assert "passport of user p@ssenger unchanged" in scrubbed
    assert scrubbed.count(REDACTED) == 3


def test_dsn_scrub_of_keyword_dsn_and_of_nothing() -> None:
    dsn = "host=db user=u password='it\\'s s3cret'"
    assert redact_dsn_secrets(f"bad dsn {dsn}; it's s3cret", dsn) == f"bad dsn host=db user=u password={REDACTED}; {REDACTED}"
    assert redact_dsn_secrets("nothing to hide", None) == "nothing to hide"
