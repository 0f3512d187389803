from __future__ import annotations

import gzip
import io
import struct
import tarfile

import pytest
import torch

from mnist_search import data as data_mod
from mnist_search.data import FILES, DataError, epoch_order, load_data, load_raw, verify
from mnist_search.data.fetch import fetch

# ---------------------------------------------------------------- corruption table


def truncate(p):
    p.write_bytes(p.read_bytes()[:-1])


def extend(p):
    p.write_bytes(p.read_bytes() + b"\0")


def flip(p):
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(bytes(b))


def wrong_magic(p):
    b = bytearray(p.read_bytes())
    b[0:4] = struct.pack(">I", 2050)
    p.write_bytes(bytes(b))


def wrong_count(p):
    b = bytearray(p.read_bytes())
    (count,) = struct.unpack(">I", b[4:8])
    b[4:8] = struct.pack(">I", count + 1)
    p.write_bytes(bytes(b))


def missing(p):
    p.unlink()


CORRUPTIONS = {
    "truncated": (truncate, "truncated or extended"),
    "extended": (extend, "truncated or extended"),
    "flipped": (flip, "SHA-256 is"),
    "wrong_magic": (wrong_magic, "IDX magic is 2050"),
    "wrong_count": (wrong_count, "header says"),
    "missing": (missing, "file is missing"),
}


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_each_corruption_of_each_file_is_named(tiny_pinned, name, kind):
    dataset, root = tiny_pinned
    raw = root / "TINY" / "raw"
    verify(dataset, root)  # fills the hash cache first: damage must be seen through it
    corrupt, expected = CORRUPTIONS[kind]
    corrupt(raw / name)
    with pytest.raises(DataError) as err:
        load_raw(dataset, root)
    message = str(err.value)
    assert name in message and expected in message and "\n" not in message
    assert "mnist-search data fetch --dataset tiny --force" in message


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_swapped_train_and_test_is_reported_as_such(tiny_pinned, kind):
    dataset, root = tiny_pinned
    raw = root / "TINY" / "raw"
    a, b = raw / f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte", None
    b = raw / a.name.replace("train", "t10k")
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)
    with pytest.raises(DataError, match="swapped"):
        verify(dataset, root)


def test_same_size_same_mtime_edit_is_still_caught_by_verify_without_cache(tiny_pinned):
    dataset, root = tiny_pinned
    path = root / "TINY" / "raw" / FILES[0]
    verify(dataset, root)
    st = path.stat()
    flip(path)
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    verify(dataset, root)  # the cache trusts size+mtime, by design
    with pytest.raises(DataError, match="SHA-256"):
        verify(dataset, root, use_cache=False)


# ---------------------------------------------------------------- loading


def test_load_gives_contiguous_scaled_tensors_and_caches(synthetic_dir):
    d = load_data(str(synthetic_dir))
    assert d.train.x.dtype == torch.float32 and d.train.x.shape == (512, 784)
    assert d.train.y.dtype == torch.int64 and d.test.x.shape == (128, 784)
    assert d.train.x.is_contiguous()
    assert 0.0 <= float(d.train.x.min()) and float(d.train.x.max()) <= 1.0
    raw = load_raw(str(synthetic_dir))
    assert torch.equal(d.train.x, raw.train_x.float() / 255)  # ToTensor's scaling exactly
    assert load_data(str(synthetic_dir)) is d


def test_normalize_is_opt_in(synthetic_dir):
    d = load_data(str(synthetic_dir), normalize=True)
    plain = load_data(str(synthetic_dir))
    torch.testing.assert_close(d.train.x, (plain.train.x - 0.1307) / 0.3081)


def test_validation_holdout_is_seeded_and_disjoint(synthetic_dir):
    a = load_data(str(synthetic_dir), val_size=100, val_seed=3)
    b = load_data(str(synthetic_dir), val_size=100, val_seed=4)
    assert len(a.train) == 412 and len(a.val) == 100
    rows = {tuple(r.tolist()) for r in a.train.x[:, :64]}
    assert not any(tuple(r.tolist()) in rows for r in a.val.x[:, :64])
    assert not torch.equal(a.val.x, b.val.x)
    with pytest.raises(DataError, match="val_size"):
        load_data(str(synthetic_dir), val_size=512)


def test_epoch_order_is_a_seeded_permutation():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    p1, p2 = epoch_order(1000, g1), epoch_order(1000, g2)
    assert torch.equal(p1, p2) and sorted(p1.tolist()) == list(range(1000))
    assert not torch.equal(p1, epoch_order(1000, g1))  # next epoch, new order


def test_unknown_dataset_is_one_line():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_raw("nope")


# ---------------------------------------------------------------- fetch, nothing half-written


def _tarball(path, synthetic_dir, gz=False):
    with tarfile.open(path, "w:gz") as tar:
        for f in FILES:
            blob = (synthetic_dir / f).read_bytes()
            name = f"package/data/{f}"
            if gz:
                blob, name = gzip.compress(blob), name + ".gz"
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_fetch_from_local_archive(tiny_pinned, synthetic_dir, tmp_path, gz):
    dataset, _ = tiny_pinned
    root = tmp_path / "fresh"
    used = fetch(dataset, root, archive=_tarball(tmp_path / "a.tgz", synthetic_dir, gz))
    assert used.startswith("file:")
    assert verify(dataset, root)


def test_corrupt_archive_fails_and_writes_nothing(tiny_pinned, synthetic_dir, tmp_path):
    dataset, _ = tiny_pinned
    good = _tarball(tmp_path / "a.tgz", synthetic_dir).read_bytes()
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(good[: len(good) // 2])
    root = tmp_path / "fresh"
    with pytest.raises(DataError, match="corrupt archive"):
        fetch(dataset, root, archive=bad)
    raw = root / "TINY" / "raw"
    assert not any((raw / f).exists() for f in FILES)
    assert list(raw.iterdir()) == []  # no staging directory left behind


def test_archive_with_wrong_content_is_rejected_before_install(tiny_pinned, synthetic_dir,
                                                               tmp_path):
    dataset, root = tiny_pinned
    other = tmp_path / "other"
    from mnist_search.data.synthetic import write_synthetic

    write_synthetic(other, n_train=512, n_test=128, seed=99)  # right shape, wrong bytes
    with pytest.raises(DataError, match="SHA-256"):
        fetch(dataset, root, archive=other, force=True)
    assert verify(dataset, root)  # the good copy already there is untouched


def test_unknown_source_is_refused(tiny_pinned):
    with pytest.raises(DataError, match="unknown source"):
        fetch("mnist", source="ftp")
    with pytest.raises(DataError, match="does not provide"):
        fetch("mnist", source="debian")


def teardown_module():
    data_mod.clear_cache()
