"""API keys for `gallery serve`: roles, and a key file that holds only each key's SHA-256 digest.

A key is shown once, when it is made, and is ``gk_<id>_<secret>``: the id names it in listings and
logs, the secret is 256 random bits. With that much entropy a plain SHA-256 cannot be reversed or
guessed, so a slow password hash would only slow every request down. The file is written atomically
with mode 0600, and re-read when it changes, so keys made or revoked while the server runs take
effect at the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import GalleryError, InvalidInputError

LOG = logging.getLogger(__name__)

#: Each role may do everything the roles before it may: search (and read), then enrol, then admin
#: (remove, calibrate, manage keys).
ROLES = ("search", "enrol", "admin")
KEYS_FILE_NAME = "api-keys.json"
KEYS_FORMAT = 1
PREFIX = "gk_"
_ID_HEX = 8


@dataclass(frozen=True)
class ApiKey:
    """One stored key: who it is for and what it may do; ``sha256`` is the digest of the whole key."""

    id: str
    role: str
    name: str
    created: float
    sha256: str

    def public(self) -> dict:
        """What a listing may show: everything but the digest."""
        return {"id": self.id, "role": self.role, "name": self.name, "created": self.created}


def role_allows(role: str, needed: str) -> bool:
    """True when a key of ``role`` may do what needs ``needed``: ``role_allows("admin", "enrol")``."""
    return ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    return role


def default_keys_path(gallery_dir: Path | str) -> Path:
    """Where a gallery's service keys live unless told otherwise: beside its manifest."""
    return Path(gallery_dir) / KEYS_FILE_NAME


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyStore:
    """The API keys in one JSON file.

    >>> store = KeyStore("gallery/api-keys.json")          # doctest: +SKIP
    >>> token, key = store.create("search", name="kiosk")    # token is shown once, never stored
    >>> store.verify(token).role                             # doctest: +SKIP
    'search'
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._stamp: Optional[tuple] = None
        self._keys: dict[str, ApiKey] = {}

    # ------------------------------------------------------------------ reading

    def _file_stamp(self) -> Optional[tuple]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _current(self) -> dict[str, ApiKey]:
        """The keys as the file holds them now (re-read only when it changed)."""
        with self._mutex:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._keys = self._read()
                self._stamp = stamp
            return self._keys

    def _read(self) -> dict[str, ApiKey]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            if data.get("format") != KEYS_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {KEYS_FORMAT}")
            keys = [ApiKey(**k) for k in data["keys"]]
            for k in keys:
                check_role(k.role)
        except (ValueError, TypeError, KeyError, AttributeError, InvalidInputError) as e:
            raise GalleryError(f"{self.path}: not a gallery API key file ({e}); fix or delete it") from None
        return {k.id: k for k in keys}

    def keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        return sorted(self._current().values(), key=lambda k: (k.created, k.id))

    def verify(self, token: str) -> Optional[ApiKey]:
        """The stored key that ``token`` is, or None (compared in constant time)."""
        if not token.startswith(PREFIX) or len(token) < len(PREFIX) + _ID_HEX + 2:
            return None
        key = self._current().get(token[len(PREFIX) : len(PREFIX) + _ID_HEX])
        if key is None or not hmac.compare_digest(key.sha256, _digest(token)):
            return None
        return key

    def loose_permissions(self) -> bool:
        """True when the file can be read by anyone but its owner (someone loosened its mode 0600)."""
        try:
            return bool(os.stat(self.path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ changing

    def create(self, role: str, *, name: str = "") -> tuple[str, ApiKey]:
        """Make a key for ``role``; returns the key itself (shown once, never stored) and its record."""
        check_role(role)
        with self._editing() as keys:
            key_id = secrets.token_hex(_ID_HEX // 2)
            while key_id in keys:
                key_id = secrets.token_hex(_ID_HEX // 2)
            token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            key = ApiKey(id=key_id, role=role, name=str(name), created=time.time(), sha256=_digest(token))
            keys[key_id] = key
        return token, key

    def revoke(self, key_id: str) -> ApiKey:
        """Delete the key ``key_id``; requests that use it are refused from then on."""
        with self._editing() as keys:
            if key_id not in keys:
                raise InvalidInputError(f"{self.path}: no key with id {key_id!r}; `gallery keys list` shows them")
            return keys.pop(key_id)

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, ApiKey]]:
        """Read-modify-write under a lock file, so a CLI and a running server never lose each other's keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = dict(self._read())
            yield keys
            self._write(keys)
        finally:
            os.close(fd)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        data = {"format": KEYS_FORMAT, "keys": [asdict(k) for k in sorted(keys.values(), key=lambda k: (k.created, k.id))]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask and ignored for an existing file
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
