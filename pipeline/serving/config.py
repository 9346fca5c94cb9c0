"""The ``[serving]`` section of ``luigi.cfg``: which online store, how to load it, where the API listens.

Operational knobs (batch size, concurrency, listen address) are ``significant=False``: they
change how a snapshot is published, never which snapshot, so they must not change a task's id.
Cassandra credentials are never read here: ``ECHONEST_CASSANDRA_USERNAME`` and
``ECHONEST_CASSANDRA_PASSWORD`` come from the environment (see docs/serving.md).
"""

from __future__ import annotations

import luigi

STORE_TYPES = ("sqlite", "redis", "cassandra")


class serving(luigi.Config):  # noqa: N801 - luigi maps the class name to the [serving] section
    store = luigi.ChoiceParameter(
        default="sqlite", choices=STORE_TYPES,
        description="Online attribute store: sqlite (embedded, one file), redis or cassandra.",
    )
    sqlite_path = luigi.Parameter(
        default="var/serving/attributes.sqlite",
        description="SQLite database file of the sqlite store (relative to the working directory).",
    )
    redis_url = luigi.Parameter(
        default="redis://127.0.0.1:6379/0", description="redis:// URL of the redis store (database number included).",
    )
    redis_prefix = luigi.Parameter(
        default="attrs", description="Key prefix of the redis store: keys are <prefix>:<version>:<track_id>.",
    )
    cassandra_hosts = luigi.Parameter(
        default="127.0.0.1", description="Comma-separated Cassandra contact points of the cassandra store.",
    )
    cassandra_port = luigi.IntParameter(default=9042, description="CQL native port of the Cassandra contact points.")
    cassandra_keyspace = luigi.Parameter(
        default="echonest_serving", description="Keyspace holding one attributes table per snapshot version.",
    )
    cassandra_local_dc = luigi.OptionalParameter(
        default=None, significant=False,
        description="Local datacenter for DC-aware, token-aware routing (unset = the driver's default).",
    )
    cassandra_replication = luigi.Parameter(
        default="{'class': 'SimpleStrategy', 'replication_factor': 1}", significant=False,
        description="CQL replication map used only when the keyspace does not exist yet "
        "(production: NetworkTopologyStrategy with RF 3 per DC, created by the operators).",
    )
    batch_size = luigi.IntParameter(
        default=1000, significant=False,
        description="Records per write batch (one transaction, pipeline or concurrent set each).",
    )
    concurrency = luigi.IntParameter(
        default=8, significant=False,
        description="Batches in flight at once for stores that allow parallel writes (redis, cassandra); "
        "sqlite has a single writer and ignores it.",
    )
    index_dir = luigi.Parameter(
        default="var/serving",
        description="Folder of the similarity indexes, one index-<date>/ folder per published version.",
    )
    full_threshold = luigi.FloatParameter(
        default=0.25, significant=False,
        description="A daily publish becomes a full load once the tracks changed since the last full load pass "
        "this share of the records (bounds drift, like compaction).",
    )
    http_host = luigi.Parameter(
        default="127.0.0.1", significant=False, description="Address the lookup API listens on (loopback by default).",
    )
    http_port = luigi.IntParameter(default=8090, significant=False, description="Port the lookup API listens on.")
