"""Where concrete stores and storages are chosen from settings (used by the CLI and the tests)."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlparse

from videosynth.catalog import Catalog, ModelsFileError
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.tasks.store import TaskStore

URL_SIGNING_SECRET = "url-signing"


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel/path.db`` (relative), ``sqlite:////abs/path.db`` (absolute) or a bare path."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("sqlite://"):
        raise ValueError(f"unsupported SQLite URL {url!r}; use sqlite:///relative.db or sqlite:////abs.db")
    return Path(url)


def build_store(settings: Settings) -> TaskStore:
    url = settings.database_url
    scheme = urlparse(url).scheme
    if scheme in ("sqlite", ""):
        return SqliteTaskStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from videosynth.tasks.postgres import PostgresTaskStore

        return PostgresTaskStore(url)
    raise ValueError(
        f"unsupported database URL {url!r} (supported: sqlite:///path, postgresql://user@host:port/db)"
    )


def build_storage(settings: Settings, store: TaskStore) -> Storage:
    url = settings.storage_url
    parsed = urlparse(url)
    if parsed.scheme in ("file", ""):
        root = Path(url[len("file://") :]) if parsed.scheme == "file" else Path(url)
        secret = store.get_or_create_secret(URL_SIGNING_SECRET, lambda: secrets.token_urlsafe(32))
        return LocalStorage(root, public_url=settings.public_url, secret=secret)
    if parsed.scheme == "s3":
        from videosynth.storage.s3 import S3Storage

        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket; use s3://bucket/prefix")
        return S3Storage(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
        )
    raise ValueError(f"unsupported storage URL {url!r} (supported: file:///dir, s3://bucket/prefix)")


def build_catalog(settings: Settings) -> Catalog:
    """The models file if one is named, else the happyhorse models on the default engine plus routes."""
    if settings.models_file is not None:
        if settings.model_routes:
            raise ModelsFileError(
                f"{settings.models_file}: VIDEOSYNTH_MODELS routes cannot be combined with a models file;"
                " give each model its engine in the file"
            )
        return Catalog.from_file(settings.models_file)
    return Catalog.default(settings.default_engine, settings.model_routes)
