"""One place to strip secrets from URLs, DSNs and any text that may quote them.

Use :func:`redact_url` for every URL shown in a message, log line or metadata value, and
:func:`redact_dsn_secrets` for free text (an exception message, a driver error) that may
contain a URL/DSN or its password; :func:`redact_secret` removes a key, :func:`redact_urls_in`
the credentials of every URL a text quotes (``cfrec_assets.settings.scrub`` uses them all). :func:`split_credentials` takes the credentials out of a URL
so that a client can send them in a header instead of a URL it would log.

Operators paste credentials unencoded, so a password may hold raw ``@``, ``:`` or ``/``
(``postgresql://user:p@ss:w/rd@host:5432/db``). The authority is therefore split at the
*last* ``@`` that is followed by something shaped like ``host[:port]``, not at the first one
(``urllib`` would stop the authority at the ``/`` inside the password). When unsure, these
helpers hide too much rather than too little: ``http://host/path@x`` displays as ``http://x``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

REDACTED = "[redacted]"

# host[:port] right after a userinfo '@': a reg-name/IPv4, or an IPv6 literal, maybe empty
# (``file://user:pw@/path``, libpq's ``postgresql://user@/db?host=/socket``).
_HOST_PORT = re.compile(r"(?:\[[0-9A-Za-z:.%_-]*\]|[^\s/?#@\[\]:]*)(?::\d*)?(?=[/?#]|$)")
_QUERY_OR_FRAGMENT = re.compile(r"[?#].*", re.DOTALL)
_URL_PASSWORD_PARAM = re.compile(r"(?i)\b((?:ssl)?password=)([^&#]*)")
# libpq keyword/value DSN: password=secret or password='it''s \' quoted'
_KEYWORD_PASSWORD = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")


def _split(url: str) -> tuple[str, str | None, str] | None:
    """``(prefix up to //, userinfo or None, rest)`` of a ``scheme://`` URL, else None."""
    start = url.find("://")
    if start < 0:
        return None
    prefix, rest = url[: start + 3], url[start + 3 :]
    at = _userinfo_end(rest)
    if at < 0:
        return prefix, None, rest
    return prefix, rest[:at], rest[at + 1 :]


def _userinfo_end(rest: str) -> int:
    """Index of the '@' that ends the userinfo in ``rest`` (after ``//``), or -1."""
    ats = [i for i, ch in enumerate(rest) if ch == "@"]
    for at in reversed(ats):
        if _HOST_PORT.match(rest, at + 1):
            return at
    # No plausible host after any '@' (a garbled port, say): hide everything up to the last one.
    return ats[-1] if ats else -1


def redact_url(url: str) -> str:
    """The URL without its ``user:password@`` part (and any ``password=`` parameter).

    Never raises: anything that is not a ``scheme://`` URL is treated as a keyword DSN.
    """
    url = str(url)
    parts = _split(url)
    if parts is None:
        return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + REDACTED, url)
    prefix, _userinfo, rest = parts
    return prefix + _URL_PASSWORD_PARAM.sub(lambda m: m.group(1) + REDACTED, rest)


def redact_url_and_query(url: str) -> str:
    """:func:`redact_url`, with the query string and fragment also replaced by ``[redacted]``: for
    a URL whose query may carry a signature or a token, such as the ``Location`` a download is
    redirected to (``https://cdn/ml-32m.zip?X-Amz-Signature=...`` shows as ``https://cdn/ml-32m.zip?[redacted]``)."""
    return _QUERY_OR_FRAGMENT.sub(lambda m: m.group()[0] + REDACTED, redact_url(url), count=1)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` (nothing else changed) and the percent-decoded
    ``(user, password)`` it held, so a client sends them in a header, never in a logged URL."""
    parts = _split(url)
    if parts is None or parts[1] is None:
        return url, None
    prefix, userinfo, rest = parts
    user, _, password = userinfo.partition(":")
    return prefix + rest, (unquote(user), unquote(password))


def dsn_password(dsn: str) -> str | None:
    """The password of a URL-style DSN as written (maybe percent-encoded), or of a keyword DSN
    with its quotes and backslash escapes removed; None when there is none."""
    written = _written_password(str(dsn))
    if written and written.startswith("'"):
        inner = written[1:-1] if len(written) > 1 and written.endswith("'") else written[1:]
        return re.sub(r"\\(.)", r"\1", inner) or None
    return written


def _written_password(dsn: str) -> str | None:
    parts = _split(dsn)
    if parts is None:
        match = _KEYWORD_PASSWORD.search(dsn)
    elif parts[1] is not None and ":" in parts[1]:
        return parts[1].split(":", 1)[1] or None
    else:
        match = _URL_PASSWORD_PARAM.search(parts[2])
    return (match.group(2) or None) if match else None


def _spellings(password: str) -> set[str]:
    """The ways a password may be quoted back: raw, decoded, percent-encoded (both hex cases)."""
    plain = unquote(password)
    encoded = quote(plain, safe="")
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)
    return {s for s in (password, plain, encoded, lower_hex) if s}


def redact_dsn_secrets(text: str, dsn: str | None) -> str:
    """``text`` with ``dsn`` shown redacted and its password removed in every spelling, then any
    piece of the password a driver may quote after splitting the URL at one of the password's
    own ``@``, ``:`` or ``/`` (libpq: ``failed to resolve host '<tail>@host'``).

    Pieces are replaced only where they stand alone (not inside a longer word or number), so
    words that merely share a prefix with the password are left alone.
    """
    text = str(text)
    if not dsn:
        return text
    secrets = {str(dsn): redact_url(dsn)}
    passwords = {p for p in (_written_password(str(dsn)), dsn_password(dsn)) if p}
    for password in passwords:
        secrets.update(dict.fromkeys(_spellings(password), REDACTED))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, secrets[secret])
    pieces = set().union(*(_pieces(p) for p in passwords)) if passwords else set()
    for piece in sorted(pieces, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", REDACTED, text)
    return text


MIN_PIECE = 3  # shorter pieces would hide common words and say little about the password


def _pieces(password: str) -> set[str]:
    """What is left of ``password`` on either side of each of its URL delimiters."""
    cuts = [i for i, ch in enumerate(password) if ch in "@:/"]
    pieces = {password[:i] for i in cuts} | {password[i + 1 :] for i in cuts}
    return {piece for piece in pieces if len(piece) >= MIN_PIECE}


def redact_secret(text: str, secret: str | None) -> str:
    """``text`` without ``secret``, raw or percent-encoded (a key quoted in a URL)."""
    text = str(text)
    for spelling in sorted(_spellings(secret) if secret else (), key=len, reverse=True):
        text = text.replace(spelling, REDACTED)
    return text


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls_in(text: str) -> str:
    """``text`` with every ``scheme://`` URL in it shown by :func:`redact_url` (no userinfo)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), str(text))
