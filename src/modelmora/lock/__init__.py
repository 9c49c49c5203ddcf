"""``modelmora.lock``: schema, deterministic I/O, resolution and per-field staleness."""

from modelmora.lock.io import read_lock, write_lock
from modelmora.lock.model import LOCK_VERSION, LockedFile, LockedModel, LockFile

__all__ = ["LOCK_VERSION", "LockFile", "LockedFile", "LockedModel", "read_lock", "write_lock"]
