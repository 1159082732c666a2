"""Profiles on storage beyond this machine's disk: any fsspec URL
(`s3://bucket/job/`, `gs://`, `abfs://`, `memory://`), for `--out`,
`memprofile merge` and `memprofile.load`.

fsspec (and s3fs for S3) is the optional extra `memprofile[storage]`; it is
imported only when a URL is used, so `import memprofile` never imports it,
and a URL without it is refused in one line that says what to install.
`file://` URLs are plain local paths (no fsspec needed): every guarantee of
files.py holds for them.

Writes are all or nothing as files.write_atomic's are: an object store
makes an object visible only when its upload completes (a single PUT, which
s3fs uses below 100 MiB, or a multipart upload, completed in one call and
aborted on failure), so a reader sees the old object, or none, or the
whole new one, never a part. Reads are bounded like a local file's: the
object's size is checked before anything is downloaded, and what is read is
counted. Every failure is one line naming the URL: no such object or bucket,
no credentials, access denied, the store cannot be reached.

Credentials and options come from where the store's own tools look (for S3:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials,
an instance role; AWS_ENDPOINT_URL for an S3-compatible server), from
fsspec's configuration (FSSPEC_S3_ENDPOINT_URL, ~/.config/fsspec/*.json), or
from `storage_options` given to memprofile.load.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from memprofile.errors import MemprofileError, OutputPathError, ProfileFormatError

INSTALL = "pip install 'memprofile[storage]'"
#: `protocol://…`, also fsspec's chained form `simplecache::s3://…`; a scheme of
#: one letter is a Windows drive (C:/…), not a URL.
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*::)*(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
#: Stores whose folders are key prefixes: nothing to create before a write
#: (and s3fs's makedirs would create a bucket).
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"}
_S3 = {"s3", "s3a"}
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".gz": "application/gzip"}
#: Exception class names (of botocore, google-auth, azure-identity) that mean: no usable credentials.
_NO_CREDENTIALS = re.compile(
    r"NoCredentials|PartialCredentials|DefaultCredentials|CredentialUnavailable|Unauthenticated"
)
_NO_BUCKET = re.compile(r"bucket does not exist|NoSuchBucket|ContainerNotFound", re.IGNORECASE)
_UNREACHABLE = re.compile(r"EndpointConnection|ConnectTimeout|ConnectionError|ClientConnector|ServerDisconnected")


def is_url(target: object) -> bool:
    """Whether `target` is a URL (a str `scheme://…` or a Url), not a local path."""
    return isinstance(target, Url) or (isinstance(target, str) and _URL.match(target) is not None)


class Url:
    """A location fsspec reaches, joined and named like a Path (`/`, `.name`,
    `.parent`, `.with_name`, `.suffix`) but kept as the URL it is: Path()
    would fold `s3://` into `s3:/`. It is deliberately not os.PathLike, so
    nothing opens it as a local file by mistake. `options`: fsspec storage
    options, carried to the locations joined from it."""

    __slots__ = ("_url", "options")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        match = _URL.match(url)
        if match is None:
            raise ValueError(f"not a URL: {url!r}")
        head, tail = url[: match.end()], url[match.end() :]
        self._url = head + tail.rstrip("/") if tail.strip("/") else head + tail
        self.options = dict(options or {})

    @property
    def scheme(self) -> str:
        match = _URL.match(self._url)
        assert match is not None
        return match["scheme"].lower()

    @property
    def _split(self) -> tuple[str, str]:
        match = _URL.match(self._url)
        assert match is not None
        return self._url[: match.end()], self._url[match.end() :]

    def __truediv__(self, name: str) -> Url:
        return Url(f"{self._url.rstrip('/')}/{name}", self.options)

    @property
    def name(self) -> str:
        return posixpath.basename(self._split[1])

    @property
    def parent(self) -> Url:
        head, tail = self._split
        parent = posixpath.dirname(tail)
        return Url(head + parent, self.options) if parent else self

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def with_name(self, name: str) -> Url:
        return self.parent / name

    def absolute(self) -> Url:
        return self  # a URL is absolute

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"Url({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __lt__(self, other: Url) -> bool:
        return self._url < other._url


def as_target(path: str | os.PathLike | Url, options: dict[str, Any] | None = None) -> Path | Url:
    """A Url for a URL (`file://` URLs become the local Path they name), a Path otherwise."""
    if isinstance(path, Url):
        return Url(str(path), {**path.options, **(options or {})}) if options else path
    if isinstance(path, str) and _URL.match(path):
        if path.lower().startswith("file://"):
            from urllib.parse import urlsplit
            from urllib.request import url2pathname  # (imports http.client: only here)

            parts = urlsplit(path)
            if parts.netloc not in ("", "localhost"):
                raise ProfileFormatError(f"{path}: a file:// URL names a file on this machine (file:///path)")
            return Path(url2pathname(parts.path))  # %20 unquoted; file:///C:/x is C:\\x on Windows
        return Url(path, options)
    return Path(path)


# -- the filesystem behind a URL ----------------------------------------------------


def _filesystem(url: Url, error: type[MemprofileError]) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for `url`; `error` (one line) when
    fsspec or the store's package is missing, the protocol is unknown or the
    URL names no bucket."""
    try:
        import fsspec  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise error(f"{url} is a URL: reading and writing URLs needs fsspec: {INSTALL}") from None
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **url.options)
    except ImportError as exc:  # fsspec knows the protocol; its package (s3fs, gcsfs, adlfs) is missing
        extra = f" ({INSTALL} installs s3fs)" if url.scheme in _S3 else ""
        raise error(f"{url}: {exc}{extra}") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise error(
                f"{url}: fsspec knows no storage called {url.scheme!r}: use a URL such as s3://bucket/folder/, "
                f"gs://…, abfs://…, file:///path, or a local path"
            ) from None
        raise error(f"{url}: not a URL fsspec can open ({exc})") from None
    except Exception as exc:  # a backend that checks its options as it starts
        raise error(f"{url}: {describe(exc, url)}") from None
    if not path.strip("/"):
        raise error(f"{url} names no bucket or folder: give one, e.g. {url.scheme}://bucket/folder/")
    return fs, path


def describe(exc: BaseException, url: Url) -> str:
    """What a store's exception means, in one line, with what to do."""
    name = type(exc).__name__
    text = " ".join(str(exc).split()) or name
    if _NO_CREDENTIALS.search(name):
        where = (
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
            if url.scheme in _S3
            else "the store's usual environment variables or credential files"
        )
        return f"no credentials found ({text}): set {where}, or pass storage options"
    if isinstance(exc, FileNotFoundError):
        if _NO_BUCKET.search(text):
            return f"the bucket does not exist ({text}); create it or choose another"
        return "no such object"
    if isinstance(exc, PermissionError):
        return f"access denied ({text}): the credentials in use may not do this; check them or the bucket's policy"
    if _UNREACHABLE.search(name) or isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot reach the store ({text}); check the endpoint (AWS_ENDPOINT_URL for S3) and the network"
    return f"{name}: {text}"


# -- reading ------------------------------------------------------------------------


def read(url: Url, limit: int, what: str = "file") -> bytes:
    """The bytes of the object at `url`, at most `limit` of them (its size is
    checked before it is downloaded, and what is read is counted);
    ProfileFormatError (one line, naming the URL) otherwise."""
    fs, path = _filesystem(url, ProfileFormatError)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise ProfileFormatError(f"cannot read {what} {str(url)!r}: it is a folder (a prefix), not a file")
        size = info.get("size")
        if isinstance(size, int) and size > limit:
            raise ProfileFormatError(
                f"cannot read {what} {str(url)!r}: {size:,} bytes, more than the {_size(limit)} limit for a {what}"
            )
        data = fs.cat_file(path, start=0, end=limit + 1)  # one ranged GET; counted below, whatever info said
    except MemprofileError:
        raise
    except Exception as exc:
        raise ProfileFormatError(f"cannot read {what} {str(url)!r}: {describe(exc, url)}") from None
    if len(data) > limit:
        raise ProfileFormatError(f"cannot read {what} {str(url)!r}: more than {_size(limit)}, the limit for a {what}")
    return data


def is_dir(url: Url) -> bool:
    """Whether `url` is a folder (a prefix holding objects) rather than an object."""
    fs, path = _filesystem(url, ProfileFormatError)
    try:
        return bool(fs.isdir(path))
    except Exception as exc:
        raise ProfileFormatError(f"cannot read {str(url)!r}: {describe(exc, url)}") from None


def list_files(url: Url) -> list[Url]:
    """The objects directly in the folder (prefix) `url`, by name, fresh from the store."""
    fs, path = _filesystem(url, ProfileFormatError)
    try:
        fs.invalidate_cache(path)  # a listing cached earlier in this process may miss what others wrote since
        entries = fs.ls(path, detail=True)
    except FileNotFoundError as exc:
        if _NO_BUCKET.search(str(exc)):
            raise ProfileFormatError(f"cannot list {str(url)!r}: {describe(exc, url)}") from None
        return []  # a prefix nothing was written under
    except Exception as exc:
        raise ProfileFormatError(f"cannot list {str(url)!r}: {describe(exc, url)}") from None
    names = sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file")
    return [url / n for n in names if n]


# -- writing ------------------------------------------------------------------------


def write(url: Url, data: bytes) -> Url:
    """Put `data` at `url` whole (see the module's docstring: all or nothing);
    OutputPathError (one line) when it cannot."""
    fs, path = _filesystem(url, OutputPathError)
    # S3 serves an object with the type it was put with: a report opens in a browser, not as a download
    extra = {"ContentType": _CONTENT_TYPES[url.suffix]} if url.scheme in _S3 and url.suffix in _CONTENT_TYPES else {}
    try:
        try:
            fs.pipe_file(path, data, **extra)
        except FileNotFoundError:
            if url.scheme in OBJECT_STORES:  # a missing bucket: creating one is not ours to do
                raise
            fs.makedirs(fs._parent(path), exist_ok=True)  # a filesystem with real folders (sftp, hdfs)
            fs.pipe_file(path, data)
    except MemprofileError:
        raise
    except Exception as exc:
        raise OutputPathError(f"cannot write {url}: {describe(exc, url)}") from None
    return url


def check_folder(url: Url) -> None:
    """Say now, in one line, why profiles could not be written under the
    folder `url` (no fsspec, unknown protocol, no credentials, no such
    bucket, an object in the way): before a long run, not after it.
    Reads only (the nearest existing ancestor); writes nothing."""
    fs, path = _filesystem(url, OutputPathError)
    probe = path
    try:
        while True:
            try:
                info = fs.info(probe)
                break
            except FileNotFoundError:
                parent = fs._parent(probe)
                if not parent.strip("/") or parent == probe:
                    if parent and parent == getattr(fs, "root_marker", None):
                        return  # a filesystem with a root (memory://): folders are made as files are written
                    raise OutputPathError(
                        f"cannot write to {url}: {probe!r} does not exist (the bucket or container); "
                        f"create it or choose another"
                    ) from None
                probe = parent
    except MemprofileError:
        raise
    except Exception as exc:
        raise OutputPathError(f"cannot write to {url}: {describe(exc, url)}") from None
    if info.get("type") != "directory":
        raise OutputPathError(f"cannot write to {url}: {probe!r} is an object (a file), not a folder; choose another")


def _size(n: int) -> str:
    return f"{n >> 20:,} MiB" if n >= 1 << 20 else f"{n:,} bytes"
