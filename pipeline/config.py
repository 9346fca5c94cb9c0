"""Configuration: one ``luigi.Config`` class per ``luigi.cfg`` section.

Every knob has a description and a default that works on one machine with no
setup. Operational knobs (concurrency, timeouts, prices) are ``significant=False``
so they never change a task's identity. Secrets are never read here: S3
credentials come from the environment or the AWS credential chain.
"""

from __future__ import annotations

import warnings

import luigi


class RenamedIntParameter(luigi.IntParameter):
    """An integer key that moved: still read from its old place, with a warning an operator sees.

    luigi's ``config_path`` fallback warns with a ``DeprecationWarning``, which Python hides
    outside ``__main__``; this re-issues it as a ``FutureWarning`` (shown once per process).
    """

    def _get_value(self, task_name, param_name):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            value = super()._get_value(task_name, param_name)
        for warning in caught:
            warnings.warn(f"{warning.message} (the old key is read until the next release)", FutureWarning,
                          stacklevel=2)
        return value


class warehouse(luigi.Config):  # noqa: N801 - luigi maps the class name to the [warehouse] section
    root = luigi.Parameter(
        default="file://./warehouse",
        description="Warehouse root URL: file://PATH (relative to the working directory), s3://BUCKET/PREFIX "
        "or hdfs://HOST:PORT/PATH.",
    )
    project = luigi.Parameter(default="echonest", description="Project folder under the root for our datasets.")
    metadata_project = luigi.Parameter(
        default="metadata", description="Project folder that holds the external metadata dump (tracks/<date>)."
    )
    s3_endpoint_url = luigi.OptionalParameter(
        default=None,
        significant=False,
        description="S3 endpoint of an s3:// warehouse root (unset = AWS). Credentials come from the AWS chain.",
    )
    buckets = RenamedIntParameter(
        default=20, config_path={"section": "ingest", "name": "chunks"},
        description="Number of buckets every dataset is split into (by track id; one chunk task per bucket). "
        "A dataset written with another count is refused when read by bucket (docs/runbook.md). "
        "Formerly [ingest] chunks, still read with a deprecation warning for one release.",
    )


class source(luigi.Config):  # noqa: N801
    url = luigi.Parameter(
        default="s3://echonest-analysis/analysis/",
        description="Where the analysis JSON documents live: s3://BUCKET/PREFIX or file://FOLDER. "
        "Keys from the metadata dump are relative to it and may not escape it.",
    )
    endpoint_url = luigi.OptionalParameter(
        default=None, significant=False,
        description="S3 endpoint URL (unset = AWS; the demo sets its loopback server).",
    )
    region = luigi.Parameter(default="us-east-1", significant=False, description="AWS region of the bucket.")
    key_template = luigi.Parameter(
        default="{track_id}.json",
        description="Key of a track's analysis relative to the source URL, used when the metadata dump gives "
        "none. Fields: {track_id}, {shard} (first two characters of the id).",
    )
    concurrency = luigi.IntParameter(
        default=16, significant=False,
        description="Concurrent downloads per chunk (the connection pool is sized to it).",
    )
    max_attempts = luigi.IntParameter(
        default=5, significant=False,
        description="Total tries per request (botocore total_max_attempts, or the obstore client's own retry loop), "
        "and tries per unreadable body.",
    )
    retry_mode = luigi.ChoiceParameter(
        default="adaptive", choices=["legacy", "standard", "adaptive"], significant=False,
        description="botocore retry mode (boto3 GET client and listing); 'adaptive' also rate-limits the client on "
        "503 SlowDown.",
    )
    client = luigi.ChoiceParameter(
        default="obstore", choices=["obstore", "boto3"], significant=False,
        description="Client of the per-track GETs of an s3:// source: 'obstore' (Rust, about a quarter of boto3's "
        "CPU per GET; retries with backoff and jitter itself) or 'boto3'. Listing and credentials always use boto3.",
    )
    connect_timeout = luigi.FloatParameter(default=5.0, significant=False, description="Connect timeout, seconds.")
    read_timeout = luigi.FloatParameter(default=30.0, significant=False, description="Read timeout, seconds.")
    max_document_bytes = luigi.IntParameter(
        default=64 * 1024 * 1024, significant=False,
        description="Largest analysis document accepted (decompressed bytes); larger ones are ledgered as invalid.",
    )
    unreachable_after = luigi.IntParameter(
        default=20, significant=False,
        description="Consecutive connection failures (with no success yet) after which the source is declared "
        "unreachable and the chunk fails fast without ledgering every track.",
    )


class ingest(luigi.Config):  # noqa: N801
    failure_ratio = luigi.FloatParameter(
        default=0.001, significant=False,
        description="A chunk publishes nothing when failed/attempted exceeds this ratio (missing and invalid "
        "tracks are not failures: they are facts about the source).",
    )
    invalid_ratio = luigi.FloatParameter(
        default=0.5, significant=False,
        description="A chunk publishes nothing when newly invalid/attempted exceeds this ratio (and at least 10 "
        "documents are newly invalid; tracks already ledgered invalid do not count): a few broken documents are "
        "ledgered and the day goes on, a burst of them means the source or its exporter is broken.",
    )
    records_per_part = luigi.IntParameter(
        default=20000, significant=False, description="Records per Avro part file before a bucket rolls to the next."
    )
    codec = luigi.ChoiceParameter(
        default="snappy", choices=["null", "deflate", "snappy"], significant=False,
        description="Avro block codec of the data files (see docs/formats.md for the measurements behind it).",
    )
    runner = luigi.ChoiceParameter(
        default="inprocess", choices=["inprocess", "inline", "local", "spark", "hadoop", "emr", "dataproc"],
        significant=False,
        description="How a chunk is ingested: 'inprocess' (the worker fetches the bucket itself; the default on "
        "one host) or an mrjob runner, which runs the chunk as the map-only job MRIngestChunk with one map task "
        "per slice (see docs/cluster.md).",
    )
    slices = luigi.IntParameter(
        default=4, significant=False,
        description="Slices (map tasks) a chunk is split into when [ingest] runner is an mrjob runner (at most 10).",
    )
    mrjob_conf = luigi.OptionalParameter(
        default=None, significant=False,
        description="Path of an mrjob.conf for the ingest job (unset: the runner's defaults; see docs/cluster.md).",
    )
    processes = luigi.IntParameter(
        default=0, significant=False,
        description="Processes that decode, validate and pack one chunk's documents (0, the default: the host's "
                    "cores divided by [resources] s3_ingest, the chunks that may run at once; 1: in the thread that "
                    "consumes the downloads). Does not change how many chunks hit the source at once nor the output.",
    )


class catalog(luigi.Config):  # noqa: N801
    sort_memory_mb = luigi.FloatParameter(
        default=256.0, significant=False,
        description="Memory budget of the catalog build's sort, MB: rows beyond it are spilled as sorted runs on "
                    "local disk (the temporary folder) and merged, so memory stays flat whatever the dump's size.",
    )
    max_open_runs = luigi.IntParameter(
        default=64, significant=False,
        description="Sorted runs merged at once; more runs take extra merge passes. Bounds the open files of the "
                    "catalog build (about this many + 2) whatever the bucket count.",
    )


class costs(luigi.Config):  # noqa: N801
    get_per_1000 = luigi.FloatParameter(default=0.0004, description="USD per 1,000 GET requests.")
    list_per_1000 = luigi.FloatParameter(default=0.005, description="USD per 1,000 LIST requests.")
    transfer_per_gb = luigi.FloatParameter(
        default=0.09, description="USD per GB transferred out of S3 (0 when the workers run in the bucket's region)."
    )


class pipeline(luigi.Config):  # noqa: N801
    start_date = luigi.OptionalParameter(
        default=None,
        description="First date of the pipeline (its first full snapshot, its first attributes). "
        "Unset = the earliest metadata dump in the warehouse.",
    )


class compaction(luigi.Config):  # noqa: N801
    every_days = luigi.IntParameter(
        default=7, description="A new full snapshot is compacted when this many days passed since the last full."
    )
    max_incremental_ratio = luigi.FloatParameter(
        default=0.2,
        description="...or earlier, when the records in incrementals since the last full exceed this share of it.",
    )


class retention(luigi.Config):  # noqa: N801
    keep_full = luigi.IntParameter(
        default=2, description="Complete full snapshots kept (with the incrementals that build on them)."
    )
    dry_run = luigi.BoolParameter(
        default=False, significant=False, description="List what retention would delete without deleting it."
    )


class retry(luigi.Config):  # noqa: N801
    missing_first_days = luigi.IntParameter(
        default=1, description="A track missing from the source is retried this many days after first seen..."
    )
    missing_max_days = luigi.IntParameter(
        default=32, description="...then after doubling gaps (1, 2, 4, ...) capped at this many days."
    )


class attributes(luigi.Config):  # noqa: N801
    runner = luigi.ChoiceParameter(
        default="inline", choices=["inline", "local", "spark", "hadoop", "emr", "dataproc"], significant=False,
        description="mrjob runner of the attributes job (see docs/cluster.md for what runs where; 'spark' without "
        "an mrjob_conf is a local Spark bound to 127.0.0.1). inline: on this host, in [attributes] processes.",
    )
    processes = luigi.IntParameter(
        default=0, significant=False,
        description="With the inline runner, processes building buckets at once (0, the default: every core of the "
                    "host; 1: mrjob's inline runner in the luigi worker). Same output either way.",
    )
    mrjob_conf = luigi.OptionalParameter(
        default=None, significant=False,
        description="Path of an mrjob.conf for the attributes job (unset: the runner's defaults; see docs/cluster.md)."
    )


class quality(luigi.Config):  # noqa: N801
    enabled = luigi.BoolParameter(
        default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Run the quality gate before an analysis or attributes dataset publishes _SUCCESS.",
    )
    max_out_of_range_ratio = luigi.FloatParameter(
        default=0.0, description="Largest share of records with a value outside its documented range (0 = none)."
    )
    max_anomaly_ratio = luigi.FloatParameter(
        default=0.02, description="Largest share of records flagged anomalous (robust z-score of duration, "
        "segment rate or loudness above z_threshold, within their bucket)."
    )
    z_threshold = luigi.FloatParameter(default=8.0, description="Robust z-score (median/MAD) above which a record "
                                       "is anomalous.")
