"""A cache never fails a run: a folder where an entry belongs is replaced, and a full or read-only cache disk
is said once and worked around (features computed, not stored)."""

from __future__ import annotations

import errno
import subprocess

import pytest
import torch

from harness.data.cache import FeatureCache, write_cache_file

FP = {"backbone": "resnet", "variant": "tiny", "weights": "random(seed=0,init=v2)"}


def test_a_folder_where_an_entry_belongs_is_replaced_by_the_entry():
    cache = FeatureCache(FP, "global")
    sha = "ab" * 32
    cache.path(sha).mkdir(parents=True)  # a hand-made folder, or a broken copy of the store
    (cache.path(sha) / "junk").write_text("x")
    assert cache.get(sha) is None
    assert cache.put(sha, torch.ones(4))
    assert cache.path(sha).is_file() and torch.equal(FeatureCache(FP, "global").get(sha), torch.ones(4))


def test_a_store_that_cannot_write_its_namespace_streams_and_warns_once(monkeypatch, capsys):
    import harness.data.cache

    def full(path, data, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(harness.data.cache, "atomic_write_bytes", full)
    caches = [FeatureCache(FP, "global"), FeatureCache(FP, "dense")]
    assert not any(c.writable for c in caches)
    assert not caches[0].put("cd" * 32, torch.ones(4)) and caches[0].stats.streamed == 1
    assert not write_cache_file(caches[0].root / "text.pt", b"x")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 2 and all("No space left on device" in line for line in lines)  # store, then cache


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 kB tmpfs, filled to the last byte (needs the right to mount: skipped elsewhere)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        with open(mnt / "fill", "wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_cache_disk_is_worked_around(full_disk, capsys):
    cache = FeatureCache(FP, "global", root=full_disk / "features")
    assert not cache.writable
    assert not cache.put("ef" * 32, torch.ones(4)) and cache.get("ef" * 32) is None
    assert "No space left on device" in capsys.readouterr().err
