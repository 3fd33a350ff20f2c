"""Trial run folders in an Optuna artifact store (`optuna.artifacts`), for groups whose machines share a study storage
but no filesystem: a finished trial's run folder is packed (tar.gz) and uploaded before the trial is told COMPLETE,
and any reader (`report`, the findings report) fetches it into a local cache when it needs the folder.

Where a store is named (`--artifact-store URL`):
    a folder, or file:PATH   optuna.artifacts.FileSystemArtifactStore (a network filesystem, or one machine)
    s3://BUCKET[/PREFIX]     optuna.artifacts.Boto3ArtifactStore through boto3 (installed separately: pip install
                             boto3); credentials and the endpoint (AWS_ENDPOINT_URL_S3 for MinIO or Ceph) as boto3
                             finds them

What a trial records (user attributes): `run_artifact`, the artifact's id (Optuna also lists it under the trial's
`artifacts:` system attribute, so the Optuna dashboard shows it), and `artifact_store`, the store's URL as its worker
saw it. A reader uses that URL, or its own `--artifact-store` where the store is mounted elsewhere (a file store).
Artifact ids are fresh UUIDs and never rewritten, so a fetched folder is cached under its id for good
(`--artifact-cache`, default $XDG_CACHE_HOME/rankprune/artifacts or ~/.cache/rankprune/artifacts).

A trial read on the machine and artifact root that wrote it uses its own folder; anywhere else the store's copy, so
that a reader's unrelated folder that happens to sit at the same relative path is never taken for the trial's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankprune.errors import ConfigError

__all__ = ["ARTIFACT_ATTR", "STORE_ATTR", "ArtifactUnavailable", "Fetcher", "open_store", "store_url", "upload_run",
           "pack", "default_cache"]

ARTIFACT_ATTR = "run_artifact"  # a trial's user attribute: its run folder's artifact id
STORE_ATTR = "artifact_store"  # a trial's (and its study's) user attribute: the store's URL as the writer named it
# Left out of a packed folder: the writer's lock and lease say who writes it on the worker, nothing to a reader.
_NOT_PACKED = {".lock", ".lease"}


class ArtifactUnavailable(OSError):
    """A trial's run folder could not be fetched from its store (unreachable, missing, unreadable); an OSError, as a
    folder missing from disk is, so that readers which list unreadable folders list it too."""


# --- naming a store -------------------------------------------------------------------------------------------
def store_url(url: str) -> str:
    """The URL a trial records for the store `url` names: a file store as an absolute path (a worker's relative
    path means nothing to a reader), anything else as it is. ConfigError where `url` names no store rankprune opens."""
    kind, where = _parse(url)
    return f"file:{Path(where).resolve()}" if kind == "file" else url


def _parse(url: str) -> tuple[str, str]:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("--artifact-store needs a folder, file:PATH or s3://BUCKET[/PREFIX]")
    if url.startswith("s3://"):
        bucket = url[len("s3://"):].strip("/")
        if not bucket:
            raise ConfigError(f"artifact store {url!r} names no bucket: s3://BUCKET[/PREFIX]")
        return "s3", bucket
    if url.startswith("file://"):
        return "file", url[len("file://"):] or "/"
    if url.startswith("file:"):
        return "file", url[len("file:"):]
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is not None:
        raise ConfigError(f"artifact store {url!r}: rankprune opens a folder, file:PATH or s3://BUCKET[/PREFIX], "
                          f"not {scheme}://")
    return "file", url


def open_store(url: str, *, create: bool = False):
    """The Optuna artifact store `url` names (module docstring); `create` makes a file store's folder (a worker), a
    reader's must exist. ConfigError, one line, for a name it cannot open."""
    kind, where = _parse(url)
    if kind == "file":
        from optuna.artifacts import FileSystemArtifactStore

        path = Path(where).expanduser()
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot make artifact store {path}: {exc.strerror or exc}") from None
        if not path.is_dir():
            raise ConfigError(f"no artifact store at {path} (not a folder); give --artifact-store where this machine "
                              "mounts it")
        return FileSystemArtifactStore(path)
    try:
        import boto3  # noqa: F401  (Optuna's store needs it; said here in one line rather than in Optuna's words)
    except ImportError:
        raise ConfigError(f"artifact store {url}: s3:// stores need boto3 (pip install boto3)") from None
    from optuna.artifacts import Backoff, Boto3ArtifactStore

    bucket, _, prefix = where.partition("/")
    inner = Boto3ArtifactStore(bucket)
    if create:
        _check_bucket(inner.client, bucket, url)
    # Backoff: a dropped connection or a throttled request is tried again (Optuna's exponential backoff, about 80 s
    # in all), not fatal; a bucket that is not there is said before any trial runs (_check_bucket).
    store = Backoff(inner)
    return _Prefixed(store, prefix.strip("/")) if prefix.strip("/") else store


def _check_bucket(client, bucket: str, url: str) -> None:
    """A worker's bucket, checked once before any trial trains: one that does not exist, or an endpoint that does not
    answer, is a one-line ConfigError. 403 passes: a worker may hold PutObject without ListBucket (what HEAD needs)."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            return
        why = "no such bucket" if status == 404 else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise ConfigError(f"artifact store {url}: {why}") from None


@dataclass
class _Prefixed:
    """An artifact store whose keys all sit under `prefix/` (one bucket shared by several groups or projects);
    Optuna's stores key an artifact by its id alone."""

    store: Any
    prefix: str

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(f"{self.prefix}/{artifact_id}")

    def write(self, artifact_id: str, content_body) -> None:
        self.store.write(f"{self.prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(f"{self.prefix}/{artifact_id}")


# --- a worker: pack and upload ----------------------------------------------------------------------------------
def pack(folder: Path, target: Path) -> None:
    """`folder` as a gzipped tar at `target`, its entries under the folder's name (trial-0003/config.json, ...)."""
    folder = Path(folder)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in _NOT_PACKED else info

    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname=folder.name, filter=keep)


def upload_run(trial, store, url: str, folder: Path) -> str:
    """Pack the trial's run folder and upload it to `store` (named `url`, as store_url gives it) while the trial is
    still running (Optuna records an artifact in the trial's system attributes, which a finished trial no longer
    takes); records ARTIFACT_ATTR and STORE_ATTR on the trial and returns the artifact id."""
    from optuna.artifacts import upload_artifact

    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="rankprune-pack-") as tmp:
        packed = Path(tmp) / f"{folder.name}.tar.gz"
        pack(folder, packed)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(packed), study_or_trial=trial)
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    trial.set_user_attr(STORE_ATTR, url)
    return artifact_id


# --- a reader: fetch into the cache -----------------------------------------------------------------------------
def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rankprune" / "artifacts"


@dataclass
class Fetcher:
    """Where a reader finds trials' run folders. `store`: its --artifact-store (None: the URL each trial recorded);
    `cache`: where fetched folders are kept (None: default_cache()); `root`: the reader's artifact root, as
    `trial_folder` resolves a recorded relative path under it."""

    store: str | None = None
    cache: Path | None = None
    root: Path | None = None
    _stores: dict[str, Any] = field(default_factory=dict, repr=False)

    def folder(self, attrs: Mapping, local: str | Path) -> Path:
        """The run folder of a finished trial whose user attributes are `attrs` (a trials_frame row works too),
        `local` being where its recorded path points on this machine: that folder for a trial without an artifact or
        read where it was written, else the store's copy (fetched once into the cache). ArtifactUnavailable where
        the store cannot give it."""
        artifact_id = attrs.get(ARTIFACT_ATTR)
        if not isinstance(artifact_id, str) or not artifact_id or self._written_here(attrs):
            return Path(local)
        name = Path(str(attrs.get("run_folder") or local)).name
        url = self.store or attrs.get(STORE_ATTR)
        if not isinstance(url, str):
            raise ArtifactUnavailable(f"run folder {name} is in an artifact store, but the trial did not record which: "
                                      "give --artifact-store")
        return self.fetch(url, artifact_id, name, folder=True)

    def fetch(self, url: str, artifact_id: str, name: str, folder: bool) -> Path:
        """The artifact `artifact_id` of the store `url` (this reader's --artifact-store in its place, if given) in the
        cache as `name`: a packed run folder unpacked (folder=True), else the file itself; fetched once."""
        if name in ("", ".", "..") or Path(name).name != name:
            raise ArtifactUnavailable(f"artifact {artifact_id}: {name!r} is not a file or folder name")
        cached = self._cache() / _safe_id(artifact_id) / name
        if cached.exists():
            return cached
        self._fetch(self.store or url, artifact_id, cached, folder)
        return cached

    def _written_here(self, attrs: Mapping) -> bool:
        """Whether this machine, under this artifact root, is where the trial's worker wrote its folder."""
        worker, root = attrs.get("worker"), attrs.get("artifact_root")
        if not isinstance(worker, str) or not isinstance(root, str) or self.root is None:
            return False
        return worker.rsplit(":", 1)[0] == socket.gethostname() and Path(self.root).resolve() == Path(root)

    def _cache(self) -> Path:
        return Path(self.cache) if self.cache is not None else default_cache()

    def _open(self, url: str):
        if url not in self._stores:
            try:
                self._stores[url] = open_store(url)
            except ConfigError as exc:
                raise ArtifactUnavailable(str(exc)) from None
        return self._stores[url]

    def _fetch(self, url: str, artifact_id: str, target: Path, folder: bool) -> None:
        """Download (and unpack, a folder) the artifact beside `target`, then rename it into place: a fetch cut short
        leaves nothing a later reader would take for whole. Two readers fetching at once both download; the second
        rename finds the first's there and keeps it."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        store = self._open(url)
        home = target.parent
        try:
            home.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=home) as tmp:
                packed = Path(tmp) / ("run.tar.gz" if folder else target.name)
                with contextlib.closing(store.open_reader(artifact_id)) as reader, open(packed, "wb") as out:
                    shutil.copyfileobj(reader, out)
                inside = packed
                if folder:
                    _unpack(packed, Path(tmp) / "run")
                    inside = Path(tmp) / "run" / target.name
                    if not inside.is_dir():
                        raise ArtifactUnavailable(f"artifact {artifact_id} in {url} holds no folder {target.name}")
                with contextlib.suppress(FileExistsError, OSError):
                    if not target.exists():
                        os.replace(inside, target)
        except ArtifactNotFound:
            raise ArtifactUnavailable(f"artifact {artifact_id} ({target.name}) is not in {url}") from None
        except ArtifactUnavailable:
            raise
        except (OSError, tarfile.TarError) as exc:
            raise ArtifactUnavailable(f"cannot fetch {target.name} from {url}: {exc}") from None
        except Exception as exc:  # boto3's and botocore's own errors (credentials, endpoint, access denied)
            raise ArtifactUnavailable(f"cannot fetch {target.name} from {url}: "
                                      f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if not target.exists():
            raise ArtifactUnavailable(f"cannot place {target.name} in the cache {home}")


def _safe_id(artifact_id: str) -> str:
    """An artifact id as a cache folder name: Optuna's ids are UUIDs; anything else is refused rather than let a
    crafted attribute name a path outside the cache."""
    try:
        return str(uuid.UUID(artifact_id))
    except ValueError:
        raise ArtifactUnavailable(f"artifact id {artifact_id!r} is not an Optuna artifact id") from None


def _unpack(packed: Path, into: Path) -> None:
    """Unpack a run folder's tar, refusing members that would land outside `into` (absolute paths, '..', links
    out): tarfile's 'data' filter where Python has it (3.11.4 and later), the same checks by hand before."""
    into.mkdir()
    with tarfile.open(packed, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
            return
        base = into.resolve()
        for member in tar.getmembers():
            where = (into / member.name).resolve()
            if base not in (where, *where.parents) or member.issym() or member.islnk() or member.isdev():
                raise tarfile.TarError(f"unsafe entry {member.name!r}")
        tar.extractall(into)
