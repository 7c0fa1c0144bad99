"""The Spark session the job runs on: local by default, loopback only, UTC, quiet.

Rules:

- ``spark.sql.session.timeZone`` is UTC: every time in the tables is naive UTC text cast by Spark.
- In local mode the driver binds and advertises 127.0.0.1 (nothing listens beyond loopback) and the
  web UI is off; the executors' Python is this interpreter (``PYSPARK_PYTHON``, unless set).
- A caller's ``conf`` comes last and wins (e.g. ``spark.sql.shuffle.partitions`` on a cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from pyspark.sql import SparkSession

LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
    "spark.ui.showConsoleProgress": "false",
}
COMMON_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "static",
}


_PREVIOUS_SIGINT: list[Any] = []
"""The SIGINT handler before :func:`start` (PySpark replaces it and never puts it back)."""


def start(
    master: str | None, conf: Mapping[str, str], app_name: str = "msgwatch-analysis"
) -> SparkSession:
    """A session on ``master`` (None: the one spark-submit gives), or the running one."""
    builder = SparkSession.builder.appName(app_name)
    settings = dict(COMMON_CONF)
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            settings.update(LOCAL_CONF)
            # PySpark started from Python takes its workers' interpreter from the environment
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # never another interface
    settings.update(conf)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if threading.current_thread() is threading.main_thread() and not _PREVIOUS_SIGINT:
        _PREVIOUS_SIGINT.append(signal.getsignal(signal.SIGINT))
    session = builder.getOrCreate()  # PySpark installs a SIGINT handler of its own here
    session.sparkContext.setLogLevel("ERROR")
    return session


def stop(session: SparkSession) -> None:
    """Stop ``session`` and the JVM PySpark started for it.

    ``SparkSession.stop`` leaves PySpark's gateway JVM running until the Python process exits
    (hundreds of MB for the rest of a long process, e.g. a test run); this ends it too, and a later
    :func:`start` launches a new one.
    """
    from pyspark import SparkContext

    session.stop()
    if _PREVIOUS_SIGINT and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _PREVIOUS_SIGINT.pop())  # SparkContext leaves its own
    gateway = SparkContext._gateway
    if gateway is None:
        return
    process = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a JVM that ignores SIGTERM is killed
            process.kill()
            process.wait()
        if process.stdin is not None:
            process.stdin.close()
