"""MVTec-layout loading, image/mask reading, fingerprints, hold-out splits and the torch ImageDataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.mvtec import (
    Sample,
    defect_kind,
    discover_categories,
    fingerprint,
    load_samples,
    read_mask,
    split_holdout,
)
from edge_ad.errors import ConfigError, DataError
from edge_ad.imageio import read_image
from edge_ad.runtime.preprocess import Preprocess


def _img(path: Path, seed: int, shape: tuple[int, ...] = (40, 48, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def _mask(path: Path, shape: tuple[int, int] = (40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(shape, np.uint8)
    m[10:20, 5:15] = 255
    assert cv2.imwrite(str(path), m)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Two categories: `b` (3 train, 1 good + 1 crack test) and `a` (2 train incl. upper-case .JPG, 1 good test)."""
    r = tmp_path / "ds"
    for i in range(3):
        _img(r / "b" / "train" / "good" / f"{i:03d}.png", i)
    _img(r / "b" / "test" / "good" / "000.png", 10)
    _img(r / "b" / "test" / "crack" / "000.png", 11)
    _mask(r / "b" / "ground_truth" / "crack" / "000_mask.png")
    _img(r / "a" / "train" / "good" / "000.png", 20)
    _img(r / "a" / "train" / "good" / "001.JPG", 21)
    (r / "a" / "train" / "good" / "notes.txt").write_text("not an image")
    (r / "a" / "train" / "good" / ".hidden.png").write_bytes(b"")
    _img(r / "a" / "test" / "good" / "000.png", 22)
    (r / "docs").mkdir()  # not a category: no train/ or test/
    return r


def test_discover_and_load_train(root: Path) -> None:
    assert discover_categories(root) == ["a", "b"]
    samples = load_samples(root, split="train")
    assert [(s.category, s.path.name) for s in samples] == [
        ("a", "000.png"),
        ("a", "001.JPG"),
        ("b", "000.png"),
        ("b", "001.png"),
        ("b", "002.png"),
    ]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None and s.split == "train" for s in samples)
    assert [s.category for s in load_samples(root, ["b"], "train")] == ["b"] * 3
    assert load_samples(root, "b") == load_samples(root, ["b", "b"])


def test_load_test_split(root: Path) -> None:
    samples = load_samples(root, ["b", "a"], "test")
    assert [(s.category, s.defect_type, s.label) for s in samples] == [
        ("a", "good", 0),
        ("b", "crack", 1),
        ("b", "good", 0),
    ]
    crack = samples[1]
    assert crack.mask_path == root / "b" / "ground_truth" / "crack" / "000_mask.png"
    assert samples[0].mask_path is None


@pytest.mark.parametrize("kind", ["missing", "file", "no_categories"])
def test_bad_root(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("x")
    elif kind == "no_categories":
        (target / "something").mkdir(parents=True)
    with pytest.raises(DataError, match=str(target)) as e:
        load_samples(target)
    assert {"missing": "does not exist", "file": "expected a directory", "no_categories": "no categories"}[kind] in str(
        e.value
    )


def test_unknown_category_lists_known(root: Path) -> None:
    with pytest.raises(DataError, match=r"unknown category \['zz'\]; known: \['a', 'b'\]"):
        load_samples(root, ["a", "zz"])


def test_empty_category(root: Path) -> None:
    (root / "c" / "train" / "good").mkdir(parents=True)
    (root / "c" / "train" / "good" / "readme.md").write_text("no images")
    with pytest.raises(DataError, match=r"category 'c': empty, no train images in .*c/train/good"):
        load_samples(root, ["c"])


def test_missing_mask_names_expected_path(root: Path) -> None:
    _img(root / "b" / "test" / "hole" / "007.png", 5)
    expected = root / "b" / "ground_truth" / "hole" / "007_mask.png"
    with pytest.raises(DataError, match=f"007.png: ground-truth mask missing, expected {expected}"):
        load_samples(root, ["b"], "test")


def test_loco_mask_folder(root: Path) -> None:
    _img(root / "b" / "test" / "logical_anomalies" / "001.png", 6)
    d = root / "b" / "ground_truth" / "logical_anomalies" / "001"
    _mask(d / "000.png")
    m2 = np.zeros((40, 48), np.uint8)
    m2[30:35, 40:45] = 255
    cv2.imwrite(str(d / "001.png"), m2)
    s = next(x for x in load_samples(root, ["b"], "test") if x.defect_type == "logical_anomalies")
    assert s.mask_path == d
    m = read_mask(d)
    assert m.sum() == 100 + 25 and set(np.unique(m)) == {0, 1}


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"t{ext}"
    _img(p, 1, (64, 64, 3))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{p}: truncated"):
        read_image(p)


@pytest.mark.parametrize("content", [b"", b"this is not an image at all"])
def test_unreadable_image(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(DataError, match=str(p)):
        read_image(p)
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_read_image_converts_grey_rgba_16bit(tmp_path: Path) -> None:
    grey = np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) % 256
    cv2.imwrite(str(tmp_path / "g.png"), grey.astype(np.uint8))
    g = read_image(tmp_path / "g.png")
    assert g.shape == (40, 48, 3) and g.dtype == np.uint8 and (g[..., 0] == grey).all() and (g[..., 2] == grey).all()
    bgra = np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 40)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    assert np.array_equal(read_image(tmp_path / "a.png"), bgra[..., :3])
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 257 * 4).astype(np.uint16)
    deep[0, 0] = 65535
    cv2.imwrite(str(tmp_path / "d.tif"), deep)
    d = read_image(tmp_path / "d.tif")
    assert d.dtype == np.uint8 and d[0, 0, 0] == 255 and d[0, 1, 1] == 4 and d[7, 7, 2] == 252


def test_read_mask_binary(tmp_path: Path) -> None:
    m = np.zeros((10, 12, 3), np.uint8)
    m[2:4, 3:5, 1] = 7
    cv2.imwrite(str(tmp_path / "m.png"), m)
    out = read_mask(tmp_path / "m.png")
    assert out.shape == (10, 12) and out.dtype == np.uint8 and out.sum() == 4 and out.max() == 1


def test_defect_kind() -> None:
    assert defect_kind("good") == "good"
    for d in ("missing_part", "extra_part", "misplaced_part", "logical_anomalies"):
        assert defect_kind(d) == "logical"
    for d in ("scratch", "crack", "structural_anomalies", "hole"):
        assert defect_kind(d) == "structural"


def test_fingerprint(root: Path, tmp_path: Path) -> None:
    samples = load_samples(root, split="test") + load_samples(root)
    fp = fingerprint(samples, root)
    assert len(fp) == 64 and fp == fingerprint(list(reversed(samples)), root)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert fingerprint(load_samples(moved, split="test") + load_samples(moved), moved) == fp
    (root / "b" / "ground_truth" / "crack" / "000_mask.png").write_bytes(b"x" * 5)  # mask changed
    assert fingerprint(samples, root) != fp
    assert fingerprint(samples[:-1], root) != fingerprint(samples, root)


def _fake(cat: str, n: int) -> list[Sample]:
    return [Sample(Path(f"/d/{cat}/{i:03d}.png"), cat, "train", 0, "good") for i in range(n)]


def test_split_holdout_stratified_and_deterministic() -> None:
    samples = _fake("a", 20) + _fake("b", 2) + _fake("c", 1)
    train, hold = split_holdout(samples, 0.2, seed=3)
    assert sorted(s.category for s in hold) == ["a"] * 4 + ["b"]
    assert len(train) + len(hold) == len(samples) and not {s.path for s in train} & {s.path for s in hold}
    assert [s.path for s in train] == [s.path for s in samples if s not in hold]  # input order kept
    assert split_holdout(list(reversed(samples)), 0.2, 3)[1] == list(reversed(hold))  # order-independent choice
    assert len({tuple(s.path for s in split_holdout(samples, 0.2, k)[1]) for k in range(5)}) > 1
    assert split_holdout(samples, 0.0, 3) == (samples, [])
    with pytest.raises(ConfigError, match="fraction"):
        split_holdout(samples, 1.0, 0)


def test_image_dataset_matches_preprocess(root: Path) -> None:
    torch = pytest.importorskip("torch")
    from edge_ad.data.torch_dataset import ImageDataset

    pre = Preprocess(resize=(36, 36), crop=(32, 32))
    samples = load_samples(root, ["b"], "test")
    ds = ImageDataset(samples, pre, with_masks=True)
    assert len(ds) == 2
    crack, good = ds[0], ds[1]
    assert crack["image"].dtype == torch.float32 and crack["image"].shape == (3, 32, 32)
    expected = pre.normalize(pre.apply(read_image(samples[0].path)))
    assert np.array_equal(crack["image"].numpy(), expected)
    assert crack["mask"].dtype == torch.uint8 and crack["mask"].shape == (1, 32, 32)
    assert np.array_equal(crack["mask"][0].numpy(), pre.apply_mask(read_mask(samples[0].mask_path)))
    assert crack["mask"].sum() > 0 and good["mask"].sum() == 0
    assert (crack["label"], crack["category"], crack["defect_type"], crack["path"]) == (
        1,
        "b",
        "crack",
        str(samples[0].path),
    )
    assert "mask" not in ImageDataset(samples, pre)[0]


def test_image_dataset_mask_size_mismatch(root: Path) -> None:
    pytest.importorskip("torch")
    from edge_ad.data.torch_dataset import ImageDataset

    _mask(root / "b" / "ground_truth" / "crack" / "000_mask.png", shape=(20, 20))
    ds = ImageDataset(load_samples(root, ["b"], "test"), Preprocess(resize=(32, 32), crop=(32, 32)), with_masks=True)
    with pytest.raises(DataError, match="000_mask.png: size 20x20 differs from image"):
        ds[0]
