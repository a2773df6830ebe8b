"""Open a Spark session where the settings say, or fail fast saying what to install or set.

Three places Spark can run, chosen by :class:`SparkSettings`:

- embedded ``local[*]`` (default): a JVM in this process, bound to 127.0.0.1, no UI;
- ``spark://host:port`` (``CFREC_SPARK_MASTER``): this process is the driver, a standalone
  cluster's workers run the executors;
- ``sc://host:port`` (``CFREC_SPARK_REMOTE``): a Spark Connect client (no Java here); the cluster
  behind the server (Databricks, EMR, Dataproc, Spark on Kubernetes) does the work.

Before anything starts, a cluster URL is probed over TCP (an unreachable one fails in seconds,
not after pyspark's minutes of retries) and the local modes check that Java 17+ is there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cfrec_assets.pipeline.spark.cleanup import releasing
from cfrec_assets.settings import SPARK_DRIVER_MEMORY, SPARK_MASTER, SPARK_REMOTE

if TYPE_CHECKING:  # pyspark is the optional [spark] extra
    from pyspark.sql import SparkSession

MIN_JAVA = 17
DEFAULT_MASTER = SPARK_MASTER.default
DEFAULT_DRIVER_MEMORY = SPARK_DRIVER_MEMORY.default
ENV_MASTER, ENV_REMOTE = SPARK_MASTER.name, SPARK_REMOTE.name
DEFAULT_PORTS = {"sc": 15002, "spark": 7077}
OTHER_CHOICES = (
    "or train with Surprise (svd_model config trainer: surprise, or CFREC_TRAINER=surprise), or on a Spark "
    "Connect server (CFREC_SPARK_REMOTE=sc://host:port), which needs no Java here"
)


class SparkUnavailableError(RuntimeError):
    """Spark cannot run here or cannot be reached; the message says what to install or set."""


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs (see the module docstring) and the settings of an embedded/driver JVM."""

    master: str = DEFAULT_MASTER
    remote: str | None = None
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    """Heap of this process's JVM (local mode: the whole engine). Fixed when the JVM starts."""
    connect_timeout_seconds: float = 30.0
    """How long to wait for a cluster to answer (TCP) and a standalone master to give an executor."""
    conf: Mapping[str, str] = field(default_factory=dict)
    """Extra Spark settings, applied last (e.g. spark.driver.host for a standalone cluster)."""

    @property
    def is_local(self) -> bool:
        return not self.remote and self.master.startswith("local")

    def describe(self) -> str:
        """Where Spark runs, safe to show (a Spark Connect URL's parameters may hold a token)."""
        if self.remote:
            return f"Spark Connect {endpoint(self.remote)}"
        return self.master if self.is_local else f"standalone {endpoint(self.master)}"


def endpoint(url: str) -> str:
    """``scheme://host:port`` of a cluster URL: no user, path or ``;token=…`` parameters."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/;?#]*)", url.strip())
    if not match:
        return "(not a cluster URL)"
    return f"{match.group(1)}://{match.group(2).rsplit('@', 1)[-1]}"


def hosts_of(url: str) -> list[tuple[str, int]]:
    """(host, port) of each address in ``sc://h:p`` or ``spark://h1:p1,h2:p2`` (default ports)."""
    shown = endpoint(url)
    scheme, _, authority = shown.partition("://")
    if scheme not in DEFAULT_PORTS or not authority:
        raise SparkUnavailableError(f"{shown} is not a sc://host:port or spark://host:port URL")
    found = []
    for address in authority.split(","):
        host, _, port = address.rpartition(":") if re.search(r":\d+$", address) else (address, "", "")
        host = host.strip("[]")
        if not host:
            raise SparkUnavailableError(f"{shown} names no host")
        found.append((host, int(port) if port else DEFAULT_PORTS[scheme]))
    return found


def check_reachable(url: str, what: str, variable: str, timeout: float) -> None:
    """Raise unless one of the URL's addresses accepts a TCP connection within ``timeout``."""
    problems = []
    for host, port in hosts_of(url):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError as error:
            problems.append(f"{host}:{port}: {error.strerror or error}")
    raise SparkUnavailableError(
        f"cannot reach {what} at {endpoint(url)} ({variable}): {'; '.join(problems)}. Start it, correct "
        f"{variable}, or unset it to train in this process (local[*]); nothing was trained or deployed"
    )


def find_java(environ: Mapping[str, str] = os.environ) -> str:
    """The java that pyspark will start (``$JAVA_HOME/bin/java``, else ``java`` on PATH), if it is 17+."""
    home = environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java", path=environ.get("PATH", os.defpath))
    if not java or not os.access(java, os.X_OK):
        found = f"JAVA_HOME={home} has no bin/java" if home else "there is no java on PATH"
        raise SparkUnavailableError(
            f"the Spark trainer runs Spark in this process, which needs Java {MIN_JAVA}+, but {found}: install "
            "a Java runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless, which "
            f"scripts/install-system-deps.sh does) or set JAVA_HOME; {OTHER_CHOICES}"
        )
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=120)
        major = java_major(shown.stderr + shown.stdout)
    except (OSError, subprocess.SubprocessError) as error:
        raise SparkUnavailableError(f"{java} -version failed ({error}); {OTHER_CHOICES}") from None
    if major is None or major < MIN_JAVA:
        raise SparkUnavailableError(
            f"Spark 4 needs Java {MIN_JAVA}+ but {java} is version {major or 'unknown'}: install "
            f"openjdk-17-jre-headless (or newer) and point JAVA_HOME at it; {OTHER_CHOICES}"
        )
    return java


def java_major(version_text: str) -> int | None:
    """17 for ``openjdk version "17.0.15"``, 8 for ``java version "1.8.0_402"``."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if not match:
        return None
    first = int(match.group(1))
    return int(match.group(2) or 0) if first == 1 else first


@contextmanager
def spark_session(settings: SparkSettings, environ: Mapping[str, str] = os.environ) -> Iterator[SparkSession]:
    """A session where ``settings`` say. A Spark Connect or standalone session is stopped on exit
    (it holds the cluster's resources); an embedded one is kept for the next step of this process
    (starting the JVM is the slow part) and ends with the process."""
    with _without_pandas_version_warnings(), _session(settings, environ) as session:
        yield session


@contextmanager
def _without_pandas_version_warnings() -> Iterator[None]:
    """pyspark 4.3 warns "does not yet fully support pandas >= 3.0.0" on import and on every pandas
    conversion: a dozen identical lines in each step's log. The trainer converts numeric columns
    only, and test_spark checks their round trip (npz = Spark's transform to 1e-5)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
        warnings.filterwarnings("ignore", "The copy keyword is deprecated", DeprecationWarning)
        yield


@contextmanager
def _session(settings: SparkSettings, environ: Mapping[str, str]) -> Iterator[SparkSession]:
    if settings.remote and settings.master != DEFAULT_MASTER:
        raise SparkUnavailableError(f"set {ENV_REMOTE} or {ENV_MASTER}, not both")
    timeout = settings.connect_timeout_seconds
    if settings.remote:
        check_reachable(settings.remote, "the Spark Connect server", ENV_REMOTE, timeout)
        with _connect_mode():
            session = _connect_session(settings)
            with releasing(session.stop):
                yield session
        return
    find_java(environ)
    if not settings.is_local:
        check_reachable(settings.master, "the Spark master", ENV_MASTER, timeout)
    session = _classic_session(settings)
    if settings.is_local:
        yield session
        return
    _wait_for_executors(session, settings, timeout)
    with releasing(session.stop):  # give the cluster its executors back
        yield session


def _session_class() -> type[SparkSession]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailableError(
            "the Spark trainer needs pyspark (Python 3.11+): pip install 'cfrec_assets[spark]' (make venv installs "
            "it); or train with Surprise (CFREC_TRAINER=surprise)"
        ) from None
    return SparkSession


@contextmanager
def _connect_mode() -> Iterator[None]:
    """pyspark picks Connect or classic for ``functions`` and ``ml`` by one environment variable
    (its generic builder sets it for good): set it while the Connect session is used, then put
    it back, so a later embedded session in this process works."""
    previous = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        else:
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = previous


def _connect_session(settings: SparkSettings) -> SparkSession:
    """A Spark Connect session of its own (released by ``stop()``), after one quick round trip:
    the client retries a failing server for 10+ minutes by default (a TLS or token mismatch looks
    like that), so the first call gets a short retry policy and a clear error."""
    _session_class()  # pyspark itself, or the error saying how to install it
    try:
        # The Connect class itself: pyspark's generic builder would leave the process in Connect mode.
        from pyspark.sql.connect.client.retries import DefaultPolicy
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError as error:
        raise SparkUnavailableError(
            f"Spark Connect needs pyspark's connect extra ({error}): pip install 'cfrec_assets[spark]'"
        ) from None
    shown = endpoint(settings.remote)
    try:
        session = ConnectSession.builder.remote(settings.remote).create()
    except Exception as error:  # a malformed URL
        raise SparkUnavailableError(f"{ENV_REMOTE} {shown}: {_scrub(error, settings.remote)}") from None
    client = session.client
    usual = client.get_retry_policies()
    client.set_retry_policies([DefaultPolicy(max_retries=2, max_backoff=2000)])
    try:
        session.version  # noqa: B018 (the round trip)
        for key, value in settings.conf.items():
            session.conf.set(key, value)
    except Exception as error:
        with suppress(Exception):
            session.stop()
        raise SparkUnavailableError(
            f"the Spark Connect server at {shown} ({ENV_REMOTE}) accepts connections but did not answer: "
            f"{_scrub(error, settings.remote)}. Check TLS (a token=… parameter implies use_ssl) and the token; "
            "nothing was trained or deployed"
        ) from None
    finally:
        client.set_retry_policies(usual)
    return session


def _scrub(error: BaseException, url: str) -> str:
    """An error's gist (gRPC's details when there are) without the URL's ``;key=value`` values (a token)."""
    details = getattr(error, "details", None)
    text = (details() if callable(details) else None) or str(error).strip() or type(error).__name__
    text = " ".join(str(text).split())[:400]
    for parameter in url.split(";")[1:]:
        value = parameter.partition("=")[2]
        if value:
            text = text.replace(value, "[redacted]")
    return text


def local_cores(master: str) -> int:
    """Task slots of ``local``, ``local[n]``, ``local[*]`` (and ``local[n,retries]``)."""
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if not match:
        raise SparkUnavailableError(f"{master!r} is not local, local[n], local[*] or a spark:// URL")
    slots = match.group(1) or "1"
    return (os.cpu_count() or 1) if slots == "*" else int(slots)


def _classic_session(settings: SparkSettings) -> SparkSession:
    spark_session_class = _session_class()
    conf = {
        "spark.app.name": "cfrec",
        "spark.driver.memory": settings.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # ALS solves tiny rank x rank systems per row: multi-threaded BLAS only oversubscribes the cores.
        "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    }
    if settings.is_local:
        # A handful of partitions per core: Spark's default of 200 is made for clusters.
        conf["spark.sql.shuffle.partitions"] = str(2 * local_cores(settings.master))
        conf["spark.driver.host"] = conf["spark.driver.bindAddress"] = "127.0.0.1"
        # Read by the embedded JVM when it starts: every port on loopback, single-threaded BLAS.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    conf.update(settings.conf)
    active = spark_session_class.getActiveSession()
    if active is not None and active.sparkContext.master != settings.master:
        active.stop()  # getOrCreate would silently hand back the session of the other master
    builder = spark_session_class.builder.master(settings.master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # pyspark's JAVA_GATEWAY_EXITED and friends
        raise SparkUnavailableError(
            f"Spark did not start ({settings.describe()}, driver memory {settings.driver_memory}): {error}"
        ) from None
    session.sparkContext.setLogLevel("WARN")
    return session


def _wait_for_executors(session: SparkSession, settings: SparkSettings, timeout: float) -> None:
    """A standalone master accepts an application even when no worker can run it, and its jobs
    then wait forever: fail instead when no executor registers within ``timeout``."""
    status = session.sparkContext._jsc.sc()  # no public Python API lists executors
    deadline = time.monotonic() + timeout
    while status.getExecutorMemoryStatus().size() <= 1:  # the driver counts as one
        if time.monotonic() > deadline:
            with suppress(Exception):
                session.stop()
            raise SparkUnavailableError(
                f"the Spark master {endpoint(settings.master)} gave this application no executor within "
                f"{timeout:.0f} s: start a worker, or free cores/memory on the workers (spark.executor.memory, "
                "spark.executor.cores); nothing was trained or deployed"
            )
        time.sleep(0.2)
