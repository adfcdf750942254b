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


def test_pruning_keeps_the_newest_the_serving_and_the_recently_served(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    versions = [fake_adapter(registry) for _ in range(12)]
    for served in ("v0002", "v0003", "v0005"):  # v0005 serves; a rollback goes to v0003
        registry.promote(served)
    assert registry.prune(0) == []  # 0 keeps everything
    deleted = registry.prune(2)
    # Kept: the newest two, the serving one and the two served most recently (v0003, v0002
    # come first in the history read backwards after v0005).
    assert registry.versions() == ["v0003", "v0005", "v0011", "v0012"]
    assert deleted == [v for v in versions if v not in registry.versions()]
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".deleted")]
    assert registry.rollback() == "v0003"
    # A rollback to a version that was pruned is refused, and nothing changes.
    registry.promote("v0011")
    registry.prune(1)
    assert registry.versions() == ["v0011", "v0012"]
    registry.promote("v0012")
    registry.rollback()  # to v0011
    with pytest.raises(RegistryError, match="was pruned"):
        registry.rollback()  # v0011 was promoted over v0005, which is gone
    assert registry.current() == "v0011"
