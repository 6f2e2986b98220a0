import pytest
import torch

from lfcore.cache import CacheError, Store, make_key, read_entry, write_entry


def test_roundtrip_and_key_stability(tmp_path):
    write_entry(tmp_path / "x", {"a": torch.arange(6.0).reshape(2, 3)}, {"labels": ["p", "q"]})
    tensors, meta = read_entry(tmp_path / "x")
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3)) and meta == {"labels": ["p", "q"]}
    assert make_key(a=1, b=[1, 2]) == make_key(b=[1, 2], a=1) != make_key(a=2, b=[1, 2])
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_corrupt_entry_is_reported(tmp_path):
    store = Store(tmp_path)
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
