"""Storage: the one place that turns a URL into a Luigi target or a filesystem call.

Supported URLs: ``file://PATH`` (local disk), ``s3://BUCKET/KEY`` (luigi's S3 client,
boto3 underneath) and ``hdfs://HOST:PORT/PATH`` (luigi's HDFS client). Nothing else in
the project opens, lists, moves or deletes warehouse files by hand.

Every write is atomic at file level: a local file is written under a hidden
``_temporary`` folder and renamed into place; S3 and HDFS use luigi's atomic writers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

from pipeline.errors import ConfigError, StorageError

if TYPE_CHECKING:
    import luigi.target

SCHEMES = ("file", "s3", "hdfs")
# luigi is imported where a target or luigi's S3/HDFS client is made, not here: the worker processes of the
# ingest and the attributes job read and write local files only, and luigi (with requests and jsonschema)
# is ~0.25 s of CPU to import in each of them


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with single slashes (never by string concatenation elsewhere)."""
    out = url.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"unsupported URL {url!r}: expected one of file://, s3://, hdfs://")
    return scheme


def local_path(url: str) -> str:
    """The filesystem path of a ``file://`` URL (``file://./rel`` is relative to the working directory)."""
    if not url.startswith("file://"):
        raise ConfigError(f"{url!r} is not a file:// URL")
    return url[len("file://"):] or "/"


def absolute_url(url: str) -> str:
    """Resolve a relative ``file://`` URL against the working directory; other URLs are returned as given."""
    if scheme_of(url) == "file":
        return "file://" + os.path.abspath(local_path(url))
    return url.rstrip("/")


def os_error(exc: OSError, url: str, action: str) -> StorageError:
    """A ``StorageError`` naming the URL and the cause in words an operator recognises."""
    reason = {errno.ENOSPC: "disk full", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "read-only filesystem", errno.EDQUOT: "quota exceeded",
              errno.EFBIG: "file too large (filesystem limit or ulimit -f)",
              errno.ENOTDIR: "a path component is a file, not a folder"}.get(exc.errno or 0, exc.strerror or str(exc))
    return StorageError(f"cannot {action} {url}: {reason}")


class Storage:
    """Filesystem operations on URLs of one scheme, and what the scheme guarantees.

    The capabilities are what the warehouse's commit protocol relies on; the defaults are the
    safe ones, so a new kind of storage is treated as an object store until it says otherwise.
    """

    #: ``move_tree`` is one atomic rename of the folder (else: a copy, file by file, ``last`` last).
    atomic_rename: bool = False
    #: A listing shows every write completed before it (else a new file may be missing from it for a while).
    consistent_listing: bool = False

    def exists(self, url: str) -> bool:
        raise NotImplementedError

    def list_names(self, url: str) -> list[str]:
        """Names of the direct children of a folder URL (empty when it does not exist)."""
        raise NotImplementedError

    def list_files(self, url: str) -> list[str]:
        """Every file below a folder URL, as paths relative to it (one recursive listing)."""
        raise NotImplementedError

    def size(self, url: str) -> int:
        raise NotImplementedError

    def open_read(self, url: str) -> BinaryIO:
        raise NotImplementedError

    def atomic_writer(self, url: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary file that appears at ``url`` whole on success and not at all on error."""
        raise NotImplementedError

    def remove(self, url: str) -> None:
        """Remove a file or a folder tree; removing what does not exist is a no-op."""
        raise NotImplementedError

    def move_tree(self, src: str, dst: str, last: str | None = None) -> None:
        """Move a folder; ``last`` names a file moved after every other one (the ``_SUCCESS`` marker)."""
        raise NotImplementedError

    def read_bytes(self, url: str) -> bytes:
        with self.open_read(url) as f:
            return f.read()

    def write_bytes(self, url: str, data: bytes) -> None:
        with self.atomic_writer(url) as f:
            f.write(data)


def _create_in(folder: str, path: str) -> BinaryIO:
    """Create ``path`` for writing inside ``folder``, which concurrent writers share.

    Each writer removes the shared ``_temporary`` folder once it is empty (``rmdir`` fails while
    another writer's file is in it), so between creating the folder and creating the file it can
    vanish: create both again until the file exists, which keeps the folder alive.
    """
    for _ in range(100):
        try:
            os.makedirs(folder, exist_ok=True)
            return open(path, "wb")
        except (FileNotFoundError, FileExistsError):
            continue  # another writer removed the empty folder between the two calls
    os.makedirs(folder, exist_ok=True)
    return open(path, "wb")


class LocalStorage(Storage):
    atomic_rename = True
    consistent_listing = True

    def exists(self, url: str) -> bool:
        return os.path.exists(local_path(url))

    def list_names(self, url: str) -> list[str]:
        try:
            return sorted(os.listdir(local_path(url)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise os_error(exc, url, "list") from exc

    def list_files(self, url: str) -> list[str]:
        base = local_path(url)
        out = []
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            out.extend(name if rel == "." else f"{rel}/{name}" for name in files)
        return sorted(out)

    def size(self, url: str) -> int:
        return os.path.getsize(local_path(url))

    def open_read(self, url: str) -> BinaryIO:
        try:
            return open(local_path(url), "rb")
        except OSError as exc:
            raise os_error(exc, url, "read") from exc

    @contextlib.contextmanager
    def atomic_writer(self, url: str) -> Iterator[BinaryIO]:
        path = local_path(url)
        parent, name = os.path.split(path)
        tmp_dir = os.path.join(parent, "_temporary")
        tmp = os.path.join(tmp_dir, f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            with _create_in(tmp_dir, tmp) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise os_error(exc, url, "write") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            with contextlib.suppress(OSError):
                os.rmdir(tmp_dir)  # only succeeds when no other writer uses it

    def remove(self, url: str) -> None:
        path = local_path(url)
        try:
            if os.path.isdir(path):
                # Rename first so the folder disappears at once, then delete at leisure.
                trash = f"{path.rstrip('/')}.deleting-{uuid.uuid4().hex[:8]}"
                os.rename(path, trash)
                shutil.rmtree(trash)
            elif os.path.exists(path):
                os.remove(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, url, "remove") from exc

    def move_tree(self, src: str, dst: str, last: str | None = None) -> None:
        # A directory rename is atomic on a local filesystem: the tree appears whole.
        dst_path = local_path(dst)
        try:
            os.makedirs(os.path.dirname(dst_path), exist_ok=True)
            os.rename(local_path(src), dst_path)
        except OSError as exc:
            raise os_error(exc, dst, "publish") from exc


class S3Storage(Storage):
    """S3 through luigi's ``S3Client`` (boto3 resource and the standard credential chain).

    No rename: a folder "moves" by copying its objects. Listings are strongly consistent
    (AWS S3 since December 2020, and S3-compatible servers such as moto).
    """

    atomic_rename = False
    consistent_listing = True

    def __init__(self, endpoint_url: str | None = None, client=None):
        from luigi.contrib.s3 import S3Client

        from pipeline.redact import redact_credentials_in_logs

        redact_credentials_in_logs()
        kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
        self.client = client or S3Client(**kwargs)

    def _bucket_key(self, url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.netloc, parts.path.lstrip("/")

    def _paginate(self, url: str, delimiter: str | None):
        bucket, key = self._bucket_key(url)
        prefix = key.rstrip("/") + "/" if key else ""
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        paginator = self.client.s3.meta.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(**kwargs):
            yield prefix, page

    def exists(self, url: str) -> bool:
        return self.client.exists(url)

    def list_names(self, url: str) -> list[str]:
        names = set()
        for prefix, page in self._paginate(url, "/"):
            names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def list_files(self, url: str) -> list[str]:
        out = []
        for prefix, page in self._paginate(url, None):
            out.extend(o["Key"][len(prefix):] for o in page.get("Contents", []))
        return sorted(out)

    def size(self, url: str) -> int:
        bucket, key = self._bucket_key(url)
        return self.client.s3.meta.client.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def open_read(self, url: str) -> BinaryIO:
        bucket, key = self._bucket_key(url)
        return self.client.s3.meta.client.get_object(Bucket=bucket, Key=key)["Body"]

    @contextlib.contextmanager
    def atomic_writer(self, url: str) -> Iterator[BinaryIO]:
        import luigi.format
        from luigi.contrib.s3 import S3Target

        with S3Target(url, client=self.client, format=luigi.format.Nop).open("w") as f:
            yield f

    def remove(self, url: str) -> None:
        bucket, key = self._bucket_key(url)
        # The object itself (if the URL names a file) and everything below it (if a folder);
        # deleting an absent key is not an error in S3, so this stays idempotent.
        keys = [join(key, rel) for rel in self.list_files(url)] + ([key] if key else [])
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.s3.meta.client.delete_objects(Bucket=bucket, Delete={"Objects": batch})

    def move_tree(self, src: str, dst: str, last: str | None = None) -> None:
        files = self.list_files(src)
        ordered = [f for f in files if f != last] + ([last] if last in files else [])
        for rel in ordered:
            self.client.copy(join(src, rel), join(dst, rel))
        self.remove(src)


class HdfsStorage(Storage):
    """HDFS through luigi's configured HDFS client (``[hdfs] client`` in luigi.cfg)."""

    atomic_rename = True  # a directory rename is one NameNode operation
    consistent_listing = True

    def __init__(self):
        from luigi.contrib.hdfs import get_autoconfig_client

        self.client = get_autoconfig_client()

    def exists(self, url: str) -> bool:
        return self.client.exists(url)

    def list_names(self, url: str) -> list[str]:
        if not self.client.exists(url):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.client.listdir(url))

    def list_files(self, url: str) -> list[str]:
        base = url.rstrip("/") + "/"
        return sorted(p[len(base):] for p in self.client.listdir(url, recursive=True) if p.startswith(base))

    def size(self, url: str) -> int:
        return int(self.client.count(url)["content_size"])

    def open_read(self, url: str) -> BinaryIO:
        import luigi.format
        from luigi.contrib.hdfs import HdfsTarget

        return HdfsTarget(url, format=luigi.format.Nop).open("r")

    @contextlib.contextmanager
    def atomic_writer(self, url: str) -> Iterator[BinaryIO]:
        import luigi.format
        from luigi.contrib.hdfs import HdfsTarget

        with HdfsTarget(url, format=luigi.format.Nop).open("w") as f:
            yield f

    def remove(self, url: str) -> None:
        if self.client.exists(url):
            self.client.remove(url, recursive=True, skip_trash=False)

    def move_tree(self, src: str, dst: str, last: str | None = None) -> None:
        self.client.mkdir(dst.rsplit("/", 1)[0], parents=True)
        self.client.rename_dont_move(src, dst)  # an HDFS directory rename is atomic


def storage_for(url: str, s3_endpoint_url: str | None = None) -> Storage:
    """The storage backend for a URL's scheme."""
    scheme = scheme_of(url)
    if scheme == "file":
        return LocalStorage()
    if scheme == "s3":
        return S3Storage(endpoint_url=s3_endpoint_url)
    return HdfsStorage()


def target_for(url: str, storage: Storage | None = None) -> luigi.target.FileSystemTarget:
    """The Luigi target of a URL (binary format), sharing the storage's client."""
    import luigi
    import luigi.format

    scheme = scheme_of(url)
    if scheme == "file":
        return luigi.LocalTarget(local_path(url), format=luigi.format.Nop)
    if scheme == "s3":
        from luigi.contrib.s3 import S3Target

        client = storage.client if isinstance(storage, S3Storage) else None
        return S3Target(url, client=client, format=luigi.format.Nop)
    from luigi.contrib.hdfs import HdfsTarget

    return HdfsTarget(url, format=luigi.format.Nop)
