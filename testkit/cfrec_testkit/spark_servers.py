"""Real Spark servers on loopback, started from pyspark's own distribution (``bin/spark-class``,
``sbin/start-connect-server.sh``): a Spark Connect server, and a standalone master and worker.

Every process binds to 127.0.0.1 (``SPARK_LOCAL_IP``, explicit hosts), logs into the test's folder
and runs in its own process group, which is killed on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cfrec_testkit.s3_server import free_port

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 240.0  # JVM start-up on a busy 2-core machine


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@dataclass
class SparkProcess:
    process: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@contextmanager
def _spark_process(command: list[str], folder: Path, name: str, heap: str = "512m") -> Iterator[SparkProcess]:
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_LOG_DIR": str(folder),
        "SPARK_PID_DIR": str(folder),
        "SPARK_CONF_DIR": str(folder),  # no spark-defaults.conf from the machine
        "SPARK_DAEMON_MEMORY": heap,  # sbin daemons' -Xmx: --driver-memory does not reach them
        "OPENBLAS_NUM_THREADS": "1",
    }
    log = folder / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    spark = SparkProcess(process, log)
    try:
        yield spark
    finally:
        spark.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((LOOPBACK, port)) == 0


@contextmanager
def spark_connect_server(folder: Path, memory: str = "1g", master: str = "local[1]") -> Iterator[str]:
    """A Spark Connect server (its own embedded Spark, ``master``); yields its ``sc://127.0.0.1:port`` URL."""
    port = free_port()
    command = [
        str(spark_home() / "sbin" / "start-connect-server.sh"),
        "--wait",  # foreground: this process group is the server
        "--master",
        master,
        *("--conf", f"spark.connect.grpc.binding.address={LOOPBACK}"),
        *("--conf", f"spark.connect.grpc.binding.port={port}"),
        *("--conf", "spark.ui.enabled=false"),
        *("--conf", f"spark.driver.host={LOOPBACK}"),
        *("--conf", f"spark.driver.bindAddress={LOOPBACK}"),
        *("--conf", "spark.sql.shuffle.partitions=2"),
    ]
    with _spark_process(command, folder, "connect-server", heap=memory) as server:
        server.wait_until(lambda: _listening(port), "the Spark Connect server")
        yield f"sc://{LOOPBACK}:{port}"


@contextmanager
def standalone_master(folder: Path) -> Iterator[str]:
    """A standalone master; yields its ``spark://127.0.0.1:port`` URL."""
    port = free_port()
    command = [
        str(spark_home() / "bin" / "spark-class"),
        "org.apache.spark.deploy.master.Master",
        *("--host", LOOPBACK, "--port", str(port), "--webui-port", str(free_port())),
    ]
    with _spark_process(command, folder, "master") as master:
        master.wait_until(lambda: _listening(port), "the Spark master")
        yield f"spark://{LOOPBACK}:{port}"


@contextmanager
def standalone_worker(folder: Path, master_url: str, cores: int = 1, memory: str = "1g") -> Iterator[None]:
    """A worker registered with ``master_url`` (its executors run in JVMs it starts)."""
    command = [
        str(spark_home() / "bin" / "spark-class"),
        "org.apache.spark.deploy.worker.Worker",
        *("--host", LOOPBACK, "--port", str(free_port()), "--webui-port", str(free_port())),
        *("--cores", str(cores), "--memory", memory, "--work-dir", str(folder / "work")),
        master_url,
    ]
    with _spark_process(command, folder, "worker") as worker:
        worker.wait_until(lambda: "Successfully registered with master" in worker.tail(200), "the Spark worker")
        yield
