"""A small S3-protocol client: one bucket/prefix, bytes in and out, errors that say what to fix.

boto3 is the client: AWS's own, maintained with the protocol, and it speaks to any endpoint
(``endpoint_url`` + path-style addressing), which is how Supabase Storage
(``https://<project>.supabase.co/storage/v1/s3``), Cloudflare R2 and MinIO document access.
Credentials are passed in explicitly (from ``dg.EnvVar`` in the pipeline, the app's env on the
app side) and never appear in a message: errors name the bucket, key, host and S3 error code.
Nor in a log line: botocore's DEBUG lines quote each request's ``Authorization`` header (the
access key id), so its loggers are held at INFO unless someone set their level on purpose.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cfrec_serving.redact import redact_url

S3_SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
# Loggers that would inherit DEBUG from the root (a developer's basicConfig, Dagster's
# python_log_level on the root logger) and then log the access key id.
_CLIENT_LOGGERS = ("botocore", "boto3", "s3transfer")


class ObjectStoreError(RuntimeError):
    """An object-store request failed; the message is safe to log (no credentials)."""


class ObjectTooLargeError(ObjectStoreError):
    """An object is larger than the caller expects (the manifest's recorded size): not downloaded."""


class PreconditionFailedError(ObjectStoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


def is_object_store_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: where a serving target keeps its manifest and versions."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not is_object_store_url(url):
            raise ObjectStoreError(f"not an s3:// URL: {redact_url(str(url))}")
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise ObjectStoreError(f"invalid bucket name {bucket!r} in {redact_url(url)}")
        parts = [part for part in prefix.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise ObjectStoreError(f"invalid prefix {prefix!r}: no '.' or '..' segments")
        return cls(bucket, "/".join(parts))

    def key(self, *parts: str) -> str:
        return "/".join([p for p in (self.prefix, *parts) if p])

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")


class S3Store:
    """Bytes under one ``S3Location`` on one endpoint."""

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        import boto3  # the app pays for boto3 only when it serves from object storage
        from botocore.config import Config

        _hold_client_logs_at_info()
        self.location = location
        self.endpoint = redact_url(endpoint_url) if endpoint_url else "AWS S3"
        self.host = (urlsplit(endpoint_url).hostname if endpoint_url else None) or "AWS S3"
        self.where = f"{location} at {self.host}"
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},  # 5xx/throttling only; 4xx fail at once
            # botocore >= 1.36 adds CRC checksums to every upload by default, which some S3-protocol
            # servers refuse; we verify by reading each object back instead (s3.py).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=min(timeout_seconds, 10.0),
            read_timeout=timeout_seconds,
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def get(self, *parts: str, max_bytes: int) -> bytes | None:
        """The object's bytes, or None when it does not exist (see :meth:`get_tagged`)."""
        return self.get_tagged(*parts, max_bytes=max_bytes)[0]

    def get_tagged(self, *parts: str, max_bytes: int) -> tuple[bytes | None, str | None]:
        """The object's bytes and ETag, or (None, None) when it does not exist.

        An object larger than ``max_bytes`` is refused (``ObjectTooLargeError``) unread when its
        ``Content-Length`` says so, else after reading one byte past ``max_bytes``."""
        key = self.location.key(*parts)
        try:
            reply = self._client.get_object(Bucket=self.location.bucket, Key=key)
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404"):
                return None, None
            raise self._error("GET", key, error) from None
        body, where = reply["Body"], f"GET s3://{self.location.bucket}/{key} at {self.endpoint}"
        try:
            length = reply.get("ContentLength")
            if length is not None and length > max_bytes:
                raise ObjectTooLargeError(
                    f"{where}: the object is {length:,} bytes, more than the {max_bytes:,} expected"
                )
            payload = body.read(max_bytes + 1)
        except ObjectStoreError:
            raise
        except Exception as error:
            raise self._error("GET", key, error) from None
        finally:
            body.close()  # an unread rest is dropped with its connection, never downloaded
        if len(payload) > max_bytes:
            raise ObjectTooLargeError(f"{where}: the body runs past the {max_bytes:,} bytes expected")
        return payload, reply.get("ETag")

    def put(
        self,
        data: bytes,
        *parts: str,
        content_type: str = "application/octet-stream",
        expect: str | None | bool = False,
    ) -> None:
        """Write an object. ``expect`` makes it conditional: an ETag (it must still be that object),
        None (it must not exist yet), False (unconditional). A server that does not implement
        conditional writes gets an unconditional one (single writer assumed there)."""
        key = self.location.key(*parts)
        extra = {"CacheControl": "no-cache"} if content_type == "application/json" else {}
        condition = {} if expect is False else {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        try:
            self._client.put_object(
                Bucket=self.location.bucket, Key=key, Body=data, ContentType=content_type, **extra, **condition
            )
        except Exception as error:
            if condition and _code(error) in ("NotImplemented", "501"):
                return self.put(data, *parts, content_type=content_type)
            if condition and _code(error) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise PreconditionFailedError(f"PUT s3://{self.location.bucket}/{key}: changed since read") from None
            raise self._error("PUT", key, error) from None

    def folders(self, *parts: str) -> list[str]:
        """Names of the "folders" directly under ``parts`` (common prefixes)."""
        prefix = self.location.key(*parts) + "/"
        names: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                names += [entry["Prefix"][len(prefix) :].rstrip("/") for entry in page.get("CommonPrefixes", [])]
        except Exception as error:
            raise self._error("LIST", prefix, error) from None
        return sorted(names)

    def _error(self, operation: str, key: str, error: Exception) -> ObjectStoreError:
        code = _code(error)
        where = f"{operation} s3://{self.location.bucket}/{key} at {self.endpoint}"
        if code in _AUTH_CODES:
            return ObjectStoreError(
                f"{where} was refused ({code}): check the access key id and secret "
                "(CFREC_S3_ACCESS_KEY_ID / CFREC_S3_SECRET_ACCESS_KEY) and the bucket policy"
            )
        if code == "NoSuchBucket":
            return ObjectStoreError(f"{where}: bucket {self.location.bucket!r} does not exist")
        if code:
            status = _status(error)
            return ObjectStoreError(f"{where} failed ({code}{f', HTTP {status}' if status else ''})")
        # Connection errors name the endpoint URL; keep only the kind of failure.
        return ObjectStoreError(f"{where} failed: {type(error).__name__}")


def _hold_client_logs_at_info() -> None:
    """INFO for boto's loggers that only inherit a level; one set explicitly (say, to DEBUG while
    debugging a bucket) is left as it is: then its log holds the access key id, by choice."""
    for name in _CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
