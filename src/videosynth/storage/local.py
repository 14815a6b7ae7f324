"""Local-directory storage, served by the API at ``/files/{key}`` behind HMAC-signed links.

Objects are written whole or not at all: a put copies into a uniquely named file under ``.partial/`` (on the
same filesystem) and then renames or links it into place. A put that fails removes its partial file; one
whose process was killed leaves it for :meth:`LocalStorage.sweep_partials`. ``.partial/`` is the only name
that is not a key: everything else, dot-files included, is listed and so reached by retention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlencode

from videosynth.errors import InvalidImageSize, StorageUnavailable, VideosynthError
from videosynth.storage import signing
from videosynth.storage.base import ObjectExists

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


class LocalStorage:
    def __init__(self, root: Path, *, public_url: str, secret: str) -> None:
        self.root = root.absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/")
        self._secret = secret

    def path_for(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would escape the root or name no plain file."""
        parts = PurePosixPath(key).parts
        if (
            not parts
            or key.startswith("/")
            or "\\" in key
            or parts[0] == PARTIAL_DIR
            or any(p in ("..", ".", "") for p in parts)
            or any(unicodedata.category(ch) == "Cc" for ch in key)
        ):
            raise VideosynthError("invalid storage key")  # the key itself is the server's business
        return self.root.joinpath(*parts)

    def put_file(self, key: str, path: Path, content_type: str, *, overwrite: bool = True) -> None:
        target = self.path_for(key)
        partial_dir = self.root / PARTIAL_DIR
        tmp: str | None = None
        try:
            partial_dir.mkdir(exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=partial_dir, prefix="put-")
            with os.fdopen(fd, "wb") as out, path.open("rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
            if overwrite:
                os.replace(tmp, target)
                tmp = None
            else:
                # link() fails if the name exists, atomically: of concurrent creators exactly one wins.
                os.link(tmp, target)
        except FileExistsError:
            raise ObjectExists(key) from None
        except OSError as exc:
            log.warning("could not store %s: %s", key, exc)
            raise StorageUnavailable() from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def sweep_partials(self, older_than_s: float, now_s: float | None = None) -> int:
        """Remove partial files of puts whose process died (older than ``older_than_s``); return how many."""
        now_s = time.time() if now_s is None else now_s
        removed = 0
        try:
            entries = list((self.root / PARTIAL_DIR).iterdir())
        except OSError:
            return 0
        for entry in entries:
            with contextlib.suppress(OSError):
                if now_s - entry.stat().st_mtime > older_than_s:
                    entry.unlink()
                    removed += 1
        return removed

    def url_for(self, key: str, expires_at_s: int) -> str:
        query = urlencode(
            {"Expires": expires_at_s, "Signature": signing.sign(self._secret, key, expires_at_s)}
        )
        return f"{self.public_url}/files/{quote(key)}?{query}"

    def verify(self, key: str, expires_at_s: int, signature: str, now_s: float) -> bool:
        return signing.verify(self._secret, key, expires_at_s, signature, now_s)

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def read_bytes(self, key: str, max_bytes: int) -> bytes | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        if path.stat().st_size > max_bytes:
            raise InvalidImageSize(
                f"Invalid file size. The image file size must be less than {max_bytes // (1024 * 1024)}MB."
            )
        return path.read_bytes()

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        # Uploads live one per directory (uploads/<root>/<account>/<date>/<random>/<name>): remove the
        # directories the file leaves empty, up to the storage root, or they would pile up forever.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or gone): the directories above are not empty either
            parent = parent.parent

    def list_keys(self, prefix: str = "") -> list[str]:
        # Walk only the directory the prefix names: housekeeping lists small prefixes beside a large results/.
        dirs = prefix.split("/")[:-1]
        start = self.root if any(d in ("", ".", "..") for d in dirs) else self.root.joinpath(*dirs)
        keys = [p.relative_to(self.root).as_posix() for p in start.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not k.startswith(PARTIAL_DIR + "/"))
