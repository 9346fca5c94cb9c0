"""MRIngestChunk: the ingest of one chunk as a map-only mrjob job, one map task per slice of its id range.

This is how the seed ran its ingest on Hadoop: "a map-only job using a metadata dump as the
input". Each input line is a ``SliceTask``; its map task fetches the slice's analyses from the
source and writes them into the warehouse staging area (see pipeline/ingest/slices.py). The
job's output is one JSON line per slice (its manifest); the chunk is committed afterwards by
the driver (``pipeline.snapshots.chunk_job``), only when every slice has committed.
"""

from __future__ import annotations

from mrjob.step import MRStep

from pipeline.mapjob import WarehouseMapJob


class MRIngestChunk(WarehouseMapJob):
    def steps(self):
        return [MRStep(mapper=self.ingest_slice)]

    def ingest_slice(self, _, fields: dict):
        """Fetch and write one slice; yields (slice, its manifest)."""
        from pipeline.ingest.slices import SliceTask, ingest_slice

        task = SliceTask(**fields)
        wh = self.warehouse_for(task)
        if task.kind == "incremental":  # the slice of today's delta: new, re-analysed and due-for-retry tracks
            from pipeline.snapshots.incremental import delta_slice

            items, plan = delta_slice(wh, task)
            info = ingest_slice(wh, task, items, carried=plan.carried, details=plan.as_dict)
        else:
            info = ingest_slice(wh, task)
        for outcome, n in info["counts"].items():
            self.increment_counter("ingest", outcome, n)
        yield task.slice, {k: info[k] for k in ("records", "bytes", "counts")}


if __name__ == "__main__":
    MRIngestChunk.run()
