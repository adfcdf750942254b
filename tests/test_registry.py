from pathlib import Path

import pytest

from bot.adapters import current_adapter
from tuning.registry import AdapterRegistry, RegistryError


def fake_adapter(registry: AdapterRegistry, **meta) -> str:  # type: ignore[no-untyped-def]
    staging = registry.staging_dir()
    (staging / "adapter_config.json").write_text("{}")
    return registry.commit(staging, meta)


def test_versions_are_numbered_and_never_overwritten(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    assert [fake_adapter(registry, n=i) for i in range(3)] == ["v0001", "v0002", "v0003"]
    assert registry.versions() == ["v0001", "v0002", "v0003"]
    assert registry.meta("v0002") == {"n": 1}
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".staging")]


def test_promote_and_rollback_follow_the_history(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    v1, v2 = fake_adapter(registry), fake_adapter(registry)
    assert registry.current() is None and current_adapter(registry.root) is None
    registry.promote(v1)
    registry.promote(v2)
    assert registry.current() == "v0002"
    assert current_adapter(registry.root) == ("v0002", registry.root / "v0002")
    assert registry.rollback() == "v0001"
    assert registry.rollback() is None  # back to the base model
    assert registry.current() is None
    with pytest.raises(RegistryError, match="base model is serving"):
        registry.rollback()


def test_promoting_an_unknown_or_incomplete_version_is_refused(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    (registry.root / "v0007").mkdir(parents=True)  # no adapter_config.json: incomplete
    for version in ("v0007", "v9999", "../etc"):
        with pytest.raises(RegistryError, match="No adapter version"):
            registry.promote(version)
    assert registry.current() is None
