"""Per-model, per-field staleness (uv-style), so ``lock --check`` names what drifted.

One whole-file hash (Poetry's ``content-hash``) can only say "something changed" and makes
every merge a conflict; comparing field by field tells the user which model and which
setting moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from modelmora.errors import ModelMoraError
from modelmora.lock.model import LockFile
from modelmora.lock.resolve import lock_spec
from modelmora.sources import SourceContext, make_source

_MISSING = object()


@dataclass(frozen=True)
class Drift:
    model: str
    keys: tuple[str, ...]
    """Path from the manifest root, e.g. ``("models", "minilm", "validate", "atol")``."""
    locked: Any
    current: Any

    @property
    def field(self) -> str:
        return ".".join(self.keys)

    def describe(self) -> str:
        if len(self.keys) == 2:
            if self.locked is _MISSING:
                return f"{self.field}: in modelmora.yml but not in the lock"
            return f"{self.field}: in the lock but no longer in modelmora.yml"
        return f"{self.field}: lock has {_show(self.locked)}, now {_show(self.current)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "field": self.field,
            "locked": None if self.locked is _MISSING else self.locked,
            "current": None if self.current is _MISSING else self.current,
        }


def _show(value: Any) -> str:
    return "(unset)" if value is _MISSING else repr(value)


def _flatten(value: Any, prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, Mapping) and value:
        for key in value:
            yield from _flatten(value[key], (*prefix, str(key)))
    else:
        yield prefix, value


def spec_drift(name: str, locked: Mapping[str, Any], current: Mapping[str, Any]) -> list[Drift]:
    a = dict(_flatten(locked, ("models", name)))
    b = dict(_flatten(current, ("models", name)))
    return [
        Drift(name, key, a.get(key, _MISSING), b.get(key, _MISSING))
        for key in sorted(set(a) | set(b))
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    ]


def check_lock(
    specs: Mapping[str, Mapping[str, Any]], lock: LockFile, context: SourceContext
) -> list[Drift]:
    """Every difference between the manifest (plus local sources' bytes) and the lock."""
    drifts: list[Drift] = []
    for name in sorted(set(specs) | set(lock.models)):
        entry = lock.models.get(name)
        if name not in specs:
            drifts.append(Drift(name, ("models", name), "locked", _MISSING))
            continue
        if entry is None:
            drifts.append(Drift(name, ("models", name), _MISSING, "declared"))
            continue
        current = lock_spec(specs[name])
        found = spec_drift(name, entry.spec, current)
        drifts.extend(found)
        if found:
            continue
        source = make_source(current, context)
        if source.local:
            try:
                resolution = source.resolve(entry.revision)
            except ModelMoraError as exc:
                drifts.append(Drift(name, ("models", name, "revision"), entry.revision, str(exc)))
                continue
            if resolution.revision != entry.revision:
                drifts.append(
                    Drift(name, ("models", name, "revision"), entry.revision, resolution.revision)
                )
            else:
                now = {f.path: (f.size, f.sha256) for f in resolution.files}
                was = {f.path: (f.size, f.sha256) for f in entry.files}
                for path in sorted(set(now) | set(was)):
                    if now.get(path) != was.get(path):
                        drifts.append(
                            Drift(
                                name,
                                ("models", name, "files", path),
                                was.get(path, _MISSING),
                                now.get(path, _MISSING),
                            )
                        )
    return drifts
