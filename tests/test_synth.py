"""The synthetic dataset generator and `edge-ad synth`: determinism, layout, masks, variation and CLI safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_ad.cli.main import main
from edge_ad.data import synth
from edge_ad.data.mvtec import defect_kind, discover_categories, load_samples, read_mask
from edge_ad.errors import ConfigError
from edge_ad.imageio import read_image


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every category, tiny: 2 train, 2 test good and 1 image per defect type at 64 px."""
    out = tmp_path_factory.mktemp("synth") / "all"
    synth.generate(out, categories=synth.ALL_CATEGORIES, per_category=2, size=64, seed=7)
    return out


def test_layout_masks_and_metadata(full: Path) -> None:
    assert discover_categories(full) == sorted(synth.ALL_CATEGORIES)
    train = load_samples(full)
    test = load_samples(full, split="test")
    assert len(train) == 2 * len(synth.ALL_CATEGORIES)
    for cat in synth.ALL_CATEGORIES:
        types = {s.defect_type for s in test if s.category == cat and s.label == 1}
        assert types == set(synth.defect_types(cat))
        assert ({defect_kind(t) for t in types} == {"structural", "logical"}) == (cat in synth.OBJECTS)
    for s in train + test:
        img = read_image(s.path)
        assert img.shape == (64, 64, 3)
        if s.label == 0:
            assert s.mask_path is None
            continue
        m = read_mask(s.mask_path)
        assert m.shape == img.shape[:2], s.mask_path
        assert 0 < m.mean() < 0.3, f"{s.mask_path}: mask covers {m.mean():.3f} of the image"
    meta = json.loads((full / "synth.json").read_text())
    assert meta["version"] == synth.SYNTH_VERSION and meta["seed"] == 7 and meta["size"] == 64
    assert meta["categories"]["cap"]["kind"] == "object" and meta["categories"]["fabric"]["kind"] == "texture"
    assert meta["categories"]["pcb"]["test_defects"]["misplaced_part"] == 1


def test_good_masks_are_empty_and_defects_change_pixels() -> None:
    for cat in ("mesh", "screw_plate"):
        img, mask = synth.make_image(cat, "good", 96, synth._rng(1, cat))
        assert mask.shape == img.shape[:2] and mask.sum() == 0
    for defect in synth.defect_types("pcb"):
        _bad, mask = synth.make_image("pcb", defect, 96, synth._rng(2, defect))
        assert mask.sum() > 0 and set(np.unique(mask)) <= {0, 1}


def test_determinism_and_subsets(tmp_path: Path, full: Path) -> None:
    a, b, c, d = (tmp_path / n for n in "abcd")
    synth.generate(a, categories=["wood", "cap"], per_category=2, size=64, seed=7)
    synth.generate(b, categories=["wood", "cap"], per_category=2, size=64, seed=7)
    synth.generate(c, categories=["wood", "cap"], per_category=2, size=64, seed=8)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    images = [k for k in fa if k.endswith(".png")]
    assert sum(fa[k] != fc.get(k) for k in images) == len(images)
    synth.generate(d, categories=["cap"], per_category=2, size=64, seed=7)  # a subset reproduces the same pixels
    fd, ff = _files(d), _files(full)
    assert all(fd[k] == ff[k] == fa[k] for k in fd if k.startswith("cap/"))


def test_good_images_vary() -> None:
    for cat in ("fabric", "pcb"):
        imgs = [synth.make_image(cat, "good", 64, synth._rng(0, cat, i))[0].astype(np.float32) for i in range(3)]
        for i in range(3):
            for j in range(i):
                assert np.abs(imgs[i] - imgs[j]).mean() > 3.0


def test_counts_and_bad_arguments(tmp_path: Path) -> None:
    assert synth.test_counts(40) == (10, 3)
    assert synth.test_counts(2) == (2, 1)
    with pytest.raises(ConfigError, match=r"unknown \['bolt'\]; valid: \['fabric'"):
        synth.generate(tmp_path / "x", categories=["fabric", "bolt"])
    with pytest.raises(ConfigError, match="size: expected an integer in"):
        synth.generate(tmp_path / "x", size=16)
    with pytest.raises(ConfigError, match="per_category: expected an integer >= 1, got 0"):
        synth.generate(tmp_path / "x", per_category=0)
    with pytest.raises(ConfigError, match="needs an object category"):
        synth.make_image("wood", "missing_part", 64, synth._rng(0))
    assert not (tmp_path / "x").exists()


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    args = ["synth", str(out), "--categories", "wood,pcb", "--per-category", "2", "--size", "64"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "category" in printed and "test anomalous" in printed
    assert any(line.split()[:4] == ["pcb", "2", "2", "8"] for line in printed.splitlines())
    assert any(line.split()[:4] == ["wood", "2", "2", "5"] for line in printed.splitlines())
    before = _files(out)

    assert main(args + ["--seed", "3"]) == 2  # non-empty OUT without --force
    assert "not empty; use --force" in capsys.readouterr().err
    assert _files(out) == before

    assert main(args + ["--seed", "3", "--force"]) == 0
    after = _files(out)
    assert after.keys() == before.keys() and after != before
    assert json.loads(after["synth.json"])["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dirs left behind

    assert main(["synth", str(tmp_path / "y"), "--categories", "wood,nope"]) == 2
    assert "valid: ['fabric', 'wood', 'mesh', 'carpet', 'screw_plate', 'pcb', 'cap']" in capsys.readouterr().err


def test_force_never_deletes_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    assert main(["synth", str(precious), "--per-category", "1", "--size", "64", "--force"]) == 2
    assert "not a synth dataset" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "do not delete"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["synth", str(empty), "--categories", "mesh", "--per-category", "1", "--size", "64"]) == 0
    assert (empty / "mesh" / "train" / "good" / "000.png").is_file()
