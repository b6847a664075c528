"""``s3://BUCKET[/PREFIX]?region=R&endpoint=HOST[:PORT]&scheme=http|https&profile=P``.

Nix's S3 binary cache: the same keys as a ``file://`` cache's files, in a
bucket of AWS S3 or of any S3-compatible server (MinIO, Garage, Ceph, R2).
One transport reads (the :class:`~.transport.Transport` contract) and
writes (the :class:`~.writer.CacheSink` contract).

boto3 is the client: it is AWS's own and maintained with the API, and it
resolves credentials through the standard chain (environment,
``~/.aws/credentials`` and ``~/.aws/config`` with ``profile=``, SSO, IMDS)
that users of ``nix copy --to s3://`` already rely on; its transfer
manager uploads big NARs in parallel parts that appear at once on
completion. Its calls block, so each runs in a worker thread on the
remote-fetch limiter, never on the trio loop. With no credentials at all
requests go unsigned, so a public bucket still reads.

As Nix does, a custom ``endpoint`` uses path-style addressing, and the
region defaults to us-east-1.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config

from ...errors import StoreError, StoreURLError
from .decompress import READ_SIZE, content_decoded
from .threads import run_remote
from .transport import fetch
from .url import CacheURL

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_R = TypeVar("_R")

# Which credentials file boto3 used is no news at INFO on every command's stderr.
logging.getLogger("botocore.credentials").setLevel(logging.WARNING)

DEFAULT_REGION = "us-east-1"  # Nix's default
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})
_PART_SIZE = 64 << 20


class S3Transport:
    def __init__(self, cache: CacheURL) -> None:
        self.bucket = cache.host
        self._prefix = cache.path.strip("/")
        self._endpoint = None
        if cache.endpoint is not None:
            endpoint = cache.endpoint
            self._endpoint = (
                endpoint if "://" in endpoint else f"{cache.endpoint_scheme}://{endpoint}"
            )
        try:
            session = boto3.session.Session(profile_name=cache.profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise StoreURLError(f"{cache.base}: {exc}") from None
        config = Config(
            connect_timeout=cache.timeout,
            read_timeout=cache.timeout,
            retries={"max_attempts": cache.retries + 1, "mode": "standard"},
            s3={"addressing_style": "path" if self._endpoint else "auto"},
        )
        if session.get_credentials() is None:
            config = config.merge(Config(signature_version=UNSIGNED))
        self._client: S3Client = session.client(
            "s3",
            region_name=cache.region or DEFAULT_REGION,
            endpoint_url=self._endpoint,
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=_PART_SIZE, multipart_chunksize=_PART_SIZE
        )

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    async def _call(self, key: str, fn: Callable[[], _R]) -> _R:
        """``fn()`` in a worker thread; botocore's errors as one line naming ``key``."""
        try:
            return await run_remote(fn)
        except botocore.exceptions.ClientError as exc:
            raise self._error(key, exc) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise StoreError(
                f"{self.describe(key)}: cannot reach {self._endpoint or 'S3'}: {exc}"
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreError(f"{self.describe(key)}: {exc}") from None

    def _error(self, key: str, exc: botocore.exceptions.ClientError) -> StoreError:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return StoreError(f"s3://{self.bucket}: no such bucket")
        message = exc.response.get("Error", {}).get("Message") or code
        return StoreError(f"{self.describe(key)}: {message} ({code})")

    @staticmethod
    def _absent(exc: botocore.exceptions.ClientError) -> bool:
        return exc.response.get("Error", {}).get("Code", "") in _ABSENT

    # -- reading (Transport) --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[AsyncIterator[bytes] | None]:
        def get() -> dict[str, object] | None:
            try:
                return dict(self._client.get_object(Bucket=self.bucket, Key=self._key(key)))
            except botocore.exceptions.ClientError as exc:
                if self._absent(exc):
                    return None
                raise

        response = await self._call(key, get)
        if response is None:
            yield None
            return
        body = response["Body"]
        where = self.describe(key)
        try:
            encoding = str(response.get("ContentEncoding") or "identity")
            async with (
                contextlib.aclosing(self._chunks(key, body)) as raw,
                content_decoded(raw, encoding, where) as chunks,
            ):
                yield chunks
        finally:
            body.close()  # type: ignore[attr-defined]

    async def _chunks(self, key: str, body: object) -> AsyncGenerator[bytes, None]:
        read: Callable[[int], bytes] = body.read  # type: ignore[attr-defined]
        while data := await self._call(key, lambda: read(READ_SIZE)):
            yield data

    async def exists(self, key: str) -> bool:
        def head() -> bool:
            try:
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except botocore.exceptions.ClientError as exc:
                if self._absent(exc):
                    return False
                raise
            return True

        return await self._call(key, head)

    async def aclose(self) -> None:
        self._client.close()

    # -- writing (CacheSink) --------------------------------------------------------------

    async def read_small(self, key: str, limit: int) -> bytes | None:
        return await fetch(self, key, limit)

    def spool_dir(self) -> Path:
        return Path(tempfile.gettempdir())

    async def prepare(self) -> None:
        def head() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if self._absent(exc):
                    raise StoreError(f"s3://{self.bucket}: no such bucket") from None
                raise

        await self._call("", head)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            key,
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            ),
        )

    async def commit(self, spool: Path, key: str, content_type: str) -> None:
        # A multipart upload becomes visible only once complete: never half a NAR.
        await self._call(
            key,
            lambda: self._client.upload_file(
                str(spool),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            ),
        )
        spool.unlink(missing_ok=True)


__all__ = ["S3Transport"]
