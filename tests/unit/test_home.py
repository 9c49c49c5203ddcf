"""MODELMORA_HOME resolution: env override first, then each platform's cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmora.home import default_home, modelmora_home

pytestmark = pytest.mark.torch_free


def test_env_override_wins_and_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELMORA_HOME", "rel/store")
    assert modelmora_home() == tmp_path / "rel" / "store"
    monkeypatch.setenv("MODELMORA_HOME", "~/mm")
    assert modelmora_home() == Path.home() / "mm"


def test_empty_env_falls_back_to_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELMORA_HOME", "  ")
    assert modelmora_home() == default_home()


def test_linux_default_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_home("linux") == tmp_path / "xdg" / "modelmora"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # invalid per the XDG spec
    assert default_home("linux") == Path.home() / ".cache" / "modelmora"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_home("linux") == Path.home() / ".cache" / "modelmora"


def test_macos_and_windows_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_home("darwin") == Path.home() / "Library" / "Caches" / "modelmora"
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert default_home("win32") == tmp_path / "Local" / "modelmora"
