"""A local Spark session with Hive support, on loopback only, with every file it writes under one folder.

Spark's Hive support reads the warehouse's Avro through the Hive AvroSerDe bundled in pyspark
(Spark's own Avro source is a separate package). Left alone, a Hive-enabled session writes
``metastore_db/``, ``derby.log`` and ``spark-warehouse/`` into the working directory and binds
the host's address; here all of it goes under ``folder`` and only 127.0.0.1 is bound.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def local_spark(folder: str, app: str = "echonest-sql") -> Iterator:
    """A SparkSession (``local[2]``, Hive support, UI off, loopback) whose files live under ``folder``."""
    from pipeline.jobs import check_spark

    check_spark()
    from pyspark.sql import SparkSession

    folder = os.path.abspath(folder)
    tmp = os.path.join(folder, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)  # read by the JVM that pyspark starts
    java = f"-Djava.io.tmpdir={tmp} -Dderby.system.home={folder} -Dderby.stream.error.file={folder}/derby.log"
    spark = (SparkSession.builder.master("local[2]").appName(app)
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", LOOPBACK)
             .config("spark.driver.bindAddress", LOOPBACK)
             .config("spark.local.dir", tmp)
             .config("spark.sql.warehouse.dir", os.path.join(folder, "spark-warehouse"))
             .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                     f"jdbc:derby:;databaseName={os.path.join(folder, 'metastore_db')};create=true")
             .config("spark.driver.extraJavaOptions", java)
             .config("spark.sql.session.timeZone", "UTC")
             .enableHiveSupport().getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    # Spark logs an ERROR with a stack trace on every CREATE TABLE ... STORED AS AVRO (it looks for its own
    # Avro source first, then stores the table in the Hive-compatible form): harmless, so silenced
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.sql.execution.command.DDLUtils", jvm.org.apache.logging.log4j.Level.OFF)
    try:
        yield spark
    finally:
        spark.stop()


def run_sql(spark, statements: list[str]) -> list[tuple]:
    """Run statements in order; returns the rows of the last one as tuples."""
    result = None
    for statement in statements:
        result = spark.sql(statement)
    return [tuple(row) for row in result.collect()] if result is not None else []
