"""Where a store lives: a local directory (a `pathlib.Path`) or an object-store URI (an `ObjectPath`).

Lance opens tables at any URI it accepts (`s3://`, `gs://`, `az://`, ...). The files the store keeps
beside its tables (the format marker, index files, heads) go through `ObjectPath`, which offers the part
of `Path`'s API the store uses, over pyarrow's filesystems. Both read credentials and endpoints from
the usual settings (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
`AWS_ALLOW_HTTP` for S3 and S3-compatible servers; `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_*`).

Object stores have no directories and no rename: a "directory" is a key prefix, one object's write is
atomic, and whole-directory renames are replaced by writing the file that commits a save last.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

import pyarrow.fs as pafs

from .errors import EmbedstoreError, ReadOnlyStoreError, is_write_refused

SCHEMES = ("s3", "gs", "gcs", "az")
_SETTINGS_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
LOCK_NAME = ".lock"


def is_uri(text: str | os.PathLike) -> bool:
    """True for an object-store URI (`scheme://bucket/key`), False for a local path or `file://`."""
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.lower() != "file"


def store_location(path: str | os.PathLike | ObjectPath) -> StorePath:
    """A local path made absolute, or an ObjectPath for a URI (EmbedstoreError for an unknown scheme)."""
    if isinstance(path, ObjectPath):
        return path
    text = str(path)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise EmbedstoreError(
            f"store path {text!r} holds a control character (newline, tab, ...), which Lance cannot store "
            "tables under; choose a path without one"
        )
    if text.startswith("file://"):
        text = text[len("file://") :]
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    return ObjectPath(text)


def storage_settings() -> dict[str, str]:
    """The environment's object-storage settings (credentials, region, endpoint)."""
    return {name: value for name, value in os.environ.items() if name.startswith(_SETTINGS_PREFIXES)}


def require_writable(root: Path | ObjectPath) -> None:
    """ReadOnlyStoreError when this process may not write the store at `root`: locally, any of its folders
    (Lance adds files to them) or lock files; on an object store, the credentials (a small object is
    written and deleted: a store's permissions can be learnt no other way)."""
    if isinstance(root, ObjectPath):
        probe = root / f".write-probe-{uuid.uuid4().hex}"
        with refusals_explained(root):
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
        return
    for folder, _, files in os.walk(root):
        locks = [os.path.join(folder, name) for name in files if name == LOCK_NAME]
        for path in [folder, *locks]:
            if not os.access(path, os.W_OK | (os.X_OK if path == folder else 0)):
                raise read_only_error(root, path)


def read_only_error(
    root: Path | ObjectPath, path: str | Path | ObjectPath | None = None
) -> ReadOnlyStoreError:
    """The one-line error for a store this process may not write (`path`: the part that refused)."""
    part = f"cannot write {path}" if path is not None and str(path) != str(root) else "cannot write it"
    if isinstance(root, ObjectPath):
        who, fix = "these credentials", "give them write access (e.g. s3:PutObject, s3:DeleteObject)"
    else:
        who, fix = "this user", "make it writable (chmod/chown)"
    return ReadOnlyStoreError(f"{root} is read-only for {who} ({part}); {fix} or copy the store")


@contextlib.contextmanager
def refusals_explained(root: Path | ObjectPath) -> Iterator[None]:
    """Inside, a write the system refuses (permissions, a read-only mount, an object store's access
    denied) raises ReadOnlyStoreError naming the store, instead of the OS's or Lance's error."""
    try:
        yield
    except OSError as error:
        if not is_write_refused(error):
            raise
        raise read_only_error(root, getattr(error, "filename", None)) from error


@contextlib.contextmanager
def exclusive(directory: Path | ObjectPath, lock_name: str = LOCK_NAME) -> Iterator[None]:
    """One process at a time inside: an advisory lock on `directory/lock_name`. Object stores offer no
    lock; there the caller's writes must be safe by themselves (new names, then one committing PUT).
    A directory this process may not write raises ReadOnlyStoreError."""
    if isinstance(directory, ObjectPath):
        yield
        return
    with refusals_explained(directory):
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / lock_name, "a")  # noqa: SIM115 - closed below, after the body
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_tree(path: Path | ObjectPath) -> None:
    """Delete a directory (or key prefix) and everything under it; nothing when it is not there."""
    if isinstance(path, ObjectPath):
        path.remove_tree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def is_inside(path: Path | ObjectPath, folder: Path | ObjectPath) -> bool:
    """True when `path` lies strictly below `folder` (locally after resolving '..' and links)."""
    if isinstance(path, ObjectPath) and isinstance(folder, ObjectPath):
        parts = path.key.split("/")
        below = path.key.startswith(folder.key + "/") and not {".", ".."} & set(parts)
        return below and path.scheme == folder.scheme
    if isinstance(path, ObjectPath) or isinstance(folder, ObjectPath):
        return False
    inner, outer = Path(path).resolve(), Path(folder).resolve()
    return inner != outer and inner.is_relative_to(outer)


def remove_inside(path: Path | ObjectPath, folder: Path | ObjectPath) -> None:
    """Delete the file or tree `path`, which must lie inside `folder` (EmbedstoreError otherwise): the
    cleanups of indexes and heads go through here, so a bad name can never delete anything outside."""
    if not is_inside(path, folder):
        raise EmbedstoreError(f"refusing to remove {path}: it is not inside {folder}")
    if path.is_dir():
        remove_tree(path)
    else:
        path.unlink(missing_ok=True)


def tree_size(path: Path | ObjectPath) -> int:
    """Bytes of every file under `path`."""
    if isinstance(path, ObjectPath):
        return path.tree_size()
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_bytes(size: int) -> str:
    """A byte count as B, KiB, MiB or GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class ObjectPath:
    """A key (or key prefix) in an object store, with the `Path` methods the store needs."""

    def __init__(self, uri: str) -> None:
        scheme, _, rest = uri.partition("://")
        self.scheme = scheme.lower()
        if self.scheme not in SCHEMES:
            raise EmbedstoreError(
                f"{uri}: unknown storage scheme {scheme!r}; use a local path or one of "
                + ", ".join(f"{s}://" for s in SCHEMES)
            )
        self.key = rest.strip("/")  # bucket/prefix/...
        self._listed: pafs.FileInfo | None = None
        if not self.key:
            raise EmbedstoreError(f"{uri} names no bucket; write {scheme}://BUCKET/PREFIX")

    # -- naming ------------------------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __truediv__(self, name: str | os.PathLike) -> ObjectPath:
        return ObjectPath(f"{self}/{str(name).strip('/')}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        head = self.key.rsplit("/", 1)[0] if "/" in self.key else self.key
        return ObjectPath(f"{self.scheme}://{head}")

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def filesystem(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, self.bucket, tuple(sorted(storage_settings().items())))

    # -- looking ---------------------------------------------------------------------------------------

    def _info(self) -> pafs.FileInfo:
        """What the store says of this key; for a path from `iterdir`/`glob`, as of that listing."""
        return self._listed if self._listed is not None else self.filesystem.get_file_info(self.key)

    @classmethod
    def _from_listing(cls, scheme: str, info: pafs.FileInfo) -> ObjectPath:
        path = cls(f"{scheme}://{info.path}")
        path._listed = info  # one listing request answers is_dir/is_file for every child
        return path

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        """True when some key lies under this prefix (object stores have no empty directories)."""
        return self._info().type == pafs.FileType.Directory

    def iterdir(self) -> list[ObjectPath]:
        """The files and prefixes one level below (empty when there are none)."""
        selector = pafs.FileSelector(self.key, allow_not_found=True)
        return [
            ObjectPath._from_listing(self.scheme, info) for info in self.filesystem.get_file_info(selector)
        ]

    def glob(self, pattern: str) -> list[ObjectPath]:
        """Keys below matching a relative pattern of `/`-separated fnmatch parts ("*/*/manifest.json")."""
        parts = pattern.split("/")
        selector = pafs.FileSelector(self.key, recursive=True, allow_not_found=True)
        found = []
        for info in self.filesystem.get_file_info(selector):
            relative = info.path[len(self.key) + 1 :].split("/")
            if len(relative) == len(parts) and all(map(fnmatch.fnmatchcase, relative, parts)):
                found.append(ObjectPath(f"{self.scheme}://{info.path}"))
        return found

    def age(self) -> timedelta:
        """Time since the object (or, for a prefix, the newest object under it) was written."""
        selector = pafs.FileSelector(self.key, recursive=True, allow_not_found=True)
        infos = [self._info()] if self.is_file() else self.filesystem.get_file_info(selector)
        times = [info.mtime for info in infos if info.mtime is not None]
        return datetime.now(UTC) - max(times) if times else timedelta(0)

    def tree_size(self) -> int:
        selector = pafs.FileSelector(self.key, recursive=True, allow_not_found=True)
        return sum(info.size or 0 for info in self.filesystem.get_file_info(selector) if info.is_file)

    # -- reading and writing ---------------------------------------------------------------------------

    def read_bytes(self) -> bytes:
        """The whole object (FileNotFoundError when there is none)."""
        with self.filesystem.open_input_stream(self.key) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: readers see the old object or the whole new one, never a part."""
        with self.filesystem.open_output_stream(self.key) as stream:
            stream.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists once a key is written under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.filesystem.delete_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        info = self._info()
        if info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(self.key)
        elif info.type == pafs.FileType.File:
            self.filesystem.delete_file(self.key)

    # -- checking ----------------------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """EmbedstoreError, in one line, when the bucket is missing or cannot be read with the settings."""
        where = f"{self.scheme}://{self.bucket}"
        try:
            found = self.filesystem.get_file_info(self.bucket).type != pafs.FileType.NotFound
        except OSError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise EmbedstoreError(f"cannot read {where}: {first}; {_settings_hint(self.scheme)}") from None
        if not found:
            hint = (
                ""
                if _has_credentials(self.scheme)
                else f" (no credentials are set: {_settings_hint(self.scheme)})"
            )
            raise EmbedstoreError(
                f"bucket {where} does not exist or is not visible{hint}; create it first, or check the URI"
            )


StorePath: TypeAlias = Path | ObjectPath
"""Where a store, or a file beside its tables, lives: a local `Path` or an object-store `ObjectPath`."""


@functools.cache
def _filesystem(scheme: str, bucket: str, settings: tuple) -> pafs.FileSystem:
    """One filesystem per bucket and settings (`settings`, the relevant environment, keys the cache)."""
    try:
        if scheme == "az":  # Lance's az://CONTAINER/... with the account from the environment
            account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
            if not account:
                raise ValueError("AZURE_STORAGE_ACCOUNT_NAME is not set")
            return pafs.AzureFileSystem(account, account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"))
        filesystem, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise EmbedstoreError(f"cannot open {scheme}://{bucket}: {first}; {_settings_hint(scheme)}") from None
    return filesystem


def _has_credentials(scheme: str) -> bool:
    """Whether any of the usual credential settings is present (env variables or config files)."""
    names: tuple[str, ...]
    files: tuple[str, ...]
    if scheme == "s3":
        names = (
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        )
        files = ("~/.aws/credentials", "~/.aws/config")
    elif scheme in ("gs", "gcs"):
        names = ("GOOGLE_APPLICATION_CREDENTIALS",)
        files = ("~/.config/gcloud/application_default_credentials.json",)
    else:
        names = (
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_CONNECTION_STRING",
        )
        files = ()
    return any(os.environ.get(name) for name in names) or any(Path(f).expanduser().is_file() for f in files)


def _settings_hint(scheme: str) -> str:
    if scheme == "s3":
        return (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and AWS_REGION, and "
            "AWS_ENDPOINT_URL (with AWS_ALLOW_HTTP=true for http) for an S3-compatible server"
        )
    if scheme in ("gs", "gcs"):
        return "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
    return "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token)"
