"""MRDailyAttributes: the map-only mrjob job that builds the buckets of a daily attributes snapshot.

The job's input is one small text file per bucket holding one JSON line, a ``BucketTask``.
Each map call builds that bucket: a streaming merge-join of sorted inputs that writes the
bucket's Avro parts to the warehouse staging area and commits it. The bucketing makes a
shuffle unnecessary, so there is no reducer. The job's own output is one JSON line per
bucket (its bucket manifest), which the Luigi task reads.

Why plain lines (``mapper``) rather than ``mapper_raw``: mrjob implements ``mapper_raw`` with
an input manifest, which the spark runner refuses. A line per bucket task runs unchanged on
every runner: ``inline``, ``local``, ``spark`` (run here on ``local[N]``), and ``hadoop``,
``emr`` and ``dataproc``, where one file per bucket gives one input split, so one map task,
per bucket. Workers reach the warehouse only through its URL (``file://`` on one host or a
shared mount, ``s3://`` or ``hdfs://``): see docs/cluster.md.
"""

from __future__ import annotations

from mrjob.step import MRStep

from pipeline.mapjob import WarehouseMapJob


class MRDailyAttributes(WarehouseMapJob):
    def steps(self):
        return [MRStep(mapper=self.build_bucket)]

    def build_bucket(self, _, fields: dict):
        """Build one bucket from its task's fields; yields (bucket, its manifest)."""
        from pipeline.attributes.daily import BucketTask, build_bucket

        task = BucketTask(**fields)
        info = build_bucket(self.warehouse_for(task), task)
        self.increment_counter("attributes", "computed", info.counts["computed"])
        self.increment_counter("attributes", "kept", info.counts["kept"])
        yield task.bucket, {"records": info.records, "bytes": info.bytes, "counts": info.counts}


if __name__ == "__main__":
    MRDailyAttributes.run()
