import pytest
import torch

from lfcore.cache import Cache, CacheError, make_key, read_entry, write_entry


def test_roundtrip_and_key_stability(tmp_path):
    write_entry(tmp_path / "x", {"a": torch.arange(6.0).reshape(2, 3)}, {"labels": ["p", "q"]})
    tensors, meta = read_entry(tmp_path / "x")
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3)) and meta == {"labels": ["p", "q"]}
    assert make_key(a=1, b=[1, 2]) == make_key(b=[1, 2], a=1) != make_key(a=2, b=[1, 2])
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_corrupt_entry_is_reported(tmp_path):
    store = Cache(tmp_path)
    assert store.get("acts", "k") is None
    store.put("acts", "k", {"a": torch.ones(100)}, {})
    path = tmp_path / "acts" / "k.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="does not match the digest"):
        store.get("acts", "k")
    path.write_bytes(b"")
    with pytest.raises(CacheError):
        store.get("acts", "k")


def test_dots_in_a_name_are_kept(tmp_path):
    """Suffixes are appended: "qwen2.5-0.5b" and "qwen2.5-0.6b" are two entries, not one "qwen2.5-0" entry."""
    write_entry(tmp_path / "qwen2.5-0.5b", {"a": torch.zeros(1)}, {"n": 5})
    write_entry(tmp_path / "qwen2.5-0.6b", {"a": torch.ones(1)}, {"n": 6})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen2.5-0.5b.json", "qwen2.5-0.5b.safetensors",
                                                          "qwen2.5-0.6b.json", "qwen2.5-0.6b.safetensors"]
    assert read_entry(tmp_path / "qwen2.5-0.5b")[1] == {"n": 5}
    store = Cache(tmp_path)
    store.put("acts", make_key(a=1), {"a": torch.ones(2)}, {})
    assert (tmp_path / "acts" / f"{make_key(a=1)}.json").exists() and store.get("acts", make_key(a=1)) is not None
