"""Environment settings that change behaviour, read in one place (standard library only).

``MODELMORA_HOME`` is read by :mod:`modelmora.home`, ``MODELMORA_LINK_MODE`` by the store;
credentials are read by the source of each registry, naming the variable in its errors.
"""

from __future__ import annotations

import os

OFFLINE_ENV = "HF_HUB_OFFLINE"
"""The Hugging Face convention, honoured for every source: set, nothing touches the network."""

_TRUE = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    """Whether the variable is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_from_env() -> bool:
    return env_flag(OFFLINE_ENV)
