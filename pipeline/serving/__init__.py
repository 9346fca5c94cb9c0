"""Real-time attributes: an online store of the published snapshot, similar-track search, a lookup API.

Why a package of its own: the warehouse answers batch questions in minutes, while players and
recommenders need one track's attributes in milliseconds. ``publish.publish_snapshot`` copies a
complete ``attributes/<date>`` snapshot into a versioned keyspace of an ``AttributeStore``
(SQLite, Redis or Cassandra), builds the similarity index next to it and flips the store's
pointer only when both are complete; ``api`` serves whatever the pointer names. See
docs/serving.md.

Nothing here is imported by the batch pipeline, so its dependencies (``[serving]`` extra) are
only needed where the service runs.
"""
