"""MRDailyAttributes: the map-only mrjob job that builds the buckets of a daily attributes snapshot.

Each input file is a small JSON ``BucketTask`` (one per bucket). ``mapper_raw`` hands the
mapper the file's path, so each map task builds one bucket: a streaming merge-join of sorted
inputs that writes the bucket's Avro parts to the warehouse staging area and commits it.
The bucketing makes a shuffle unnecessary, so there is no reducer. The job's own output is
one JSON line per bucket (its bucket manifest), which the Luigi task reads.

Runners: ``inline`` (default, in-process) and ``local`` (subprocesses, all cores) work as is;
``hadoop``/``emr``/``dataproc`` need the package installed on the nodes (bootstrap) and a
warehouse on HDFS or S3 — see docs/attributes.md.
"""

from __future__ import annotations

import json

from mrjob.job import MRJob
from mrjob.protocol import JSONProtocol
from mrjob.step import MRStep


class MRDailyAttributes(MRJob):
    OUTPUT_PROTOCOL = JSONProtocol

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--s3-endpoint-url", default=None,
                              help="endpoint of an s3:// warehouse (never credentials: those come from the AWS chain)")

    def steps(self):
        return [MRStep(mapper_raw=self.build_bucket)]

    def build_bucket(self, input_path, input_uri):
        """Build one bucket; yields (bucket, its manifest)."""
        from pipeline.attributes.daily import BucketTask, build_bucket
        from pipeline.layout import Layout
        from pipeline.storage import storage_for
        from pipeline.warehouse import Warehouse

        with open(input_path, encoding="utf-8") as f:
            task = BucketTask(**json.load(f))
        wh = Warehouse(Layout(task.root, task.project, task.metadata_project),
                       storage_for(task.root, self.options.s3_endpoint_url))
        info = build_bucket(wh, task)
        self.increment_counter("attributes", "computed", info.counts["computed"])
        self.increment_counter("attributes", "kept", info.counts["kept"])
        yield task.bucket, {"records": info.records, "bytes": info.bytes, "counts": info.counts}


if __name__ == "__main__":
    MRDailyAttributes.run()
