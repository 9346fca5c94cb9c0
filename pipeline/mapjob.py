"""The base of the project's map-only mrjob jobs: JSON task lines in, one manifest line per task out.

MRDailyAttributes (a bucket per task) and MRIngestChunk (a slice of a bucket per task) share it:
each map task reaches the warehouse only through the URL its task names (``file://``, ``s3://``,
``hdfs://``) and the S3 endpoint passed on the command line, so the same job runs on the inline,
local, spark, hadoop, emr and dataproc runners (see pipeline/jobs.py and docs/cluster.md).
"""

from __future__ import annotations

from mrjob.job import MRJob
from mrjob.protocol import JSONProtocol, JSONValueProtocol

from pipeline.layout import Layout
from pipeline.storage import storage_for
from pipeline.warehouse import Warehouse


class WarehouseMapJob(MRJob):
    """A map-only job over task lines; subclasses name their one step and build their task type."""

    INPUT_PROTOCOL = JSONValueProtocol
    OUTPUT_PROTOCOL = JSONProtocol

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--s3-endpoint-url", default=None,
                              help="endpoint of an s3:// warehouse (never credentials: those come from the AWS chain)")

    def warehouse_for(self, task) -> Warehouse:
        """The warehouse a task names (``root``, ``project``, ``metadata_project``), built in the map task."""
        return Warehouse(Layout(task.root, task.project, task.metadata_project),
                         storage_for(task.root, self.options.s3_endpoint_url))
