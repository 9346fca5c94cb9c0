"""Running the project's map-only mrjob jobs on any runner: one input line per task, one file per line.

Both MRDailyAttributes (a bucket per task) and MRIngestChunk (a slice of a bucket per task)
take their tasks as JSON lines. Each task gets its own input file, so Hadoop, EMR and
Dataproc make one input split (one map task) of it, the local runner one mapper call, and
Spark one partition; ``mapper_raw`` is avoided because mrjob implements it with an input
manifest, which the spark runner refuses.

The ``spark`` runner without an ``mrjob.conf`` runs a local Spark (``local[N]``) bound to
127.0.0.1 only, with the web UI off and its scratch files in the job's temp folder; with an
``mrjob.conf`` the conf decides (``spark_master: yarn`` and so on, see docs/cluster.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable

from pipeline.errors import ConfigError

RUNNERS = ("inline", "local", "spark", "hadoop", "emr", "dataproc")
LOOPBACK = "127.0.0.1"


def check_spark() -> None:
    """Fail fast, naming the fix, when this host cannot start a local Spark."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError("the spark runner needs pyspark: pip install 'echonest-pipeline[dev]' (or pyspark>=4)")
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) and not shutil.which("java"):
        raise ConfigError("the spark runner needs a Java 17+ runtime: install openjdk-17-jre-headless "
                          "(Debian) or set JAVA_HOME")


def spark_local_args(scratch: str, cores: int) -> list[str]:
    """mrjob arguments for a Spark on this host that listens on loopback only and writes under ``scratch``."""
    java_tmp = f"-Djava.io.tmpdir={scratch}"
    conf = {
        "spark.ui.enabled": "false",
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.local.dir": scratch,
        "spark.driver.extraJavaOptions": java_tmp,
        "spark.executor.extraJavaOptions": java_tmp,
    }
    args = ["--spark-master", f"local[{max(1, cores)}]", "--spark-tmp-dir", scratch,
            "--python-bin", sys.executable,  # the executors' Python: the one this project is installed in
            "--cmdenv", f"SPARK_LOCAL_IP={LOOPBACK}"]
    for key, value in conf.items():
        args += ["--jobconf", f"{key}={value}"]
    return args


def runner_args(runner: str, conf_path: str | None, scratch: str, tasks: int) -> list[str]:
    """The mrjob command-line arguments selecting ``runner`` (and its configuration)."""
    if runner not in RUNNERS:
        raise ConfigError(f"unknown mrjob runner {runner!r}; expected one of {', '.join(RUNNERS)}")
    args = ["-r", runner, "--local-tmp-dir", scratch]
    args += ["--conf-path", conf_path] if conf_path else ["--no-conf"]
    if runner == "spark" and not conf_path:
        check_spark()
        args += spark_local_args(scratch, min(tasks, os.cpu_count() or 1))
    return args


def run_map_only(job_cls, tasks: Iterable[dict], runner: str, conf_path: str | None = None,
                 extra_args: Iterable[str] = (), prefix: str = "job-") -> list[tuple]:
    """Run ``job_cls`` over ``tasks`` (one JSON line each) on ``runner``; returns the job's (key, value) output."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        inputs = os.path.join(scratch, "input")
        os.makedirs(inputs)
        paths = []
        for i, task in enumerate(tasks):
            path = os.path.join(inputs, f"task-{i:05d}.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(task, sort_keys=True) + "\n")
            paths.append(path)
        if not paths:
            return []
        work = os.path.join(scratch, "work")
        os.makedirs(work)
        job = job_cls(args=[*paths, *runner_args(runner, conf_path, work, len(paths)), *extra_args])
        with job.make_runner() as mr:
            mr.run()
            return list(job.parse_output(mr.cat_output()))
