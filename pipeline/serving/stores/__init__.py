"""Online attribute stores behind one interface, and the factory that picks one from ``[serving]``.

Store modules import their client library when opened, so using SQLite never needs redis-py
or cassandra-driver.
"""

from __future__ import annotations

from typing import Any

from pipeline.serving.config import STORE_TYPES, serving
from pipeline.serving.errors import ConfigError
from pipeline.serving.stores.base import AttributeStore, check_version

__all__ = ["AttributeStore", "check_version", "open_store", "store_from_config"]


def open_store(kind: str, settings: dict[str, Any]) -> AttributeStore:
    """Open the ``kind`` store with ``settings`` named like the ``[serving]`` parameters."""
    if kind == "sqlite":
        from pipeline.serving.stores.sqlite_store import SqliteStore

        return SqliteStore(settings["sqlite_path"])
    if kind == "redis":
        from pipeline.serving.stores.redis_store import RedisStore

        return RedisStore(settings["redis_url"], prefix=settings.get("redis_prefix", "attrs"))
    if kind == "cassandra":
        from pipeline.serving.stores.cassandra_store import CassandraStore

        hosts = [h.strip() for h in str(settings["cassandra_hosts"]).split(",") if h.strip()]
        if not hosts:
            raise ConfigError("[serving] cassandra_hosts is empty: give at least one contact point")
        return CassandraStore(hosts, settings["cassandra_keyspace"], port=int(settings.get("cassandra_port", 9042)),
                              local_dc=settings.get("cassandra_local_dc"),
                              replication=settings.get("cassandra_replication",
                                                       "{'class': 'SimpleStrategy', 'replication_factor': 1}"))
    raise ConfigError(f"[serving] store = {kind!r} is not one of {', '.join(STORE_TYPES)}")


def store_from_config(**overrides: Any) -> AttributeStore:
    """The store ``luigi.cfg`` ``[serving]`` names; non-None ``overrides`` replace single parameters."""
    cfg = serving()
    settings = {name: getattr(cfg, name) for name, _ in cfg.get_params()}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return open_store(settings["store"], settings)
