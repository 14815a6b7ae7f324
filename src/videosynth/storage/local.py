"""Local-directory storage, served by the API at ``/files/{key}`` behind HMAC-signed links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlencode

from videosynth.errors import InvalidImageSize, VideosynthError
from videosynth.storage import signing


class LocalStorage:
    def __init__(self, root: Path, *, public_url: str, secret: str) -> None:
        self.root = root.absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/")
        self._secret = secret

    def path_for(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would escape the root."""
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in key:
            raise VideosynthError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name and rename, so a reader never sees a half-written file.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

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
        keys = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith("."))
