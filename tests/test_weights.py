"""Offline weights cache (import / list / resolve / sha check), pretrained loading through it, the
`edge-ad weights` and `edge-ad models` commands. Nothing here touches the network."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.models import create_model, list_models
from edge_ad.models import weights as wcache

TINY_KEY = "edgead_vit_tiny_patch14_reg4"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_AD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logging.disable(logging.WARNING)
    try:
        sd = create_model("dinomaly-tiny").encoder.state_dict()
    finally:
        logging.disable(logging.NOTSET)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_encoder.pth"
    torch.save(sd, path)
    return path


def test_import_list_resolve(home: Path, tiny_ckpt: Path):
    assert wcache.weights_dir() == home / "weights"
    assert wcache.list_weights() == {} and wcache.resolve(TINY_KEY) is None
    dst = wcache.import_weights("dinomaly-tiny", tiny_ckpt)  # a model name means its encoder weights
    assert dst == home / "weights" / f"{TINY_KEY}.pth" and dst.read_bytes() == tiny_ckpt.read_bytes()
    entry = wcache.list_weights()[TINY_KEY]
    assert set(entry) == {"file", "sha256", "bytes", "source", "added"}
    assert entry["sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert entry["bytes"] == tiny_ckpt.stat().st_size and entry["file"] == dst.name
    assert json.loads((home / "weights" / "index.json").read_text()) == wcache.list_weights()
    assert wcache.resolve(TINY_KEY) == dst and wcache.resolve("dinomaly-tiny") == dst
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files


def test_sha_mismatch_and_missing_file_are_refused(tiny_ckpt: Path):
    dst = wcache.import_weights(TINY_KEY, tiny_ckpt)
    data = bytearray(dst.read_bytes())
    data[-1] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256 mismatch"):
        wcache.resolve(TINY_KEY)
    dst.unlink()
    with pytest.raises(ConfigError, match="missing"):
        wcache.resolve(TINY_KEY)


def test_import_rejects_non_checkpoints_and_bad_names(tmp_path: Path):
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="not a readable"):
        wcache.import_weights(TINY_KEY, junk)
    with pytest.raises(ConfigError, match="not found"):
        wcache.import_weights(TINY_KEY, tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="timm tag"):
        wcache.import_weights("../evil", junk)
    assert wcache.list_weights() == {}


def test_pretrained_loads_from_the_cache(tiny_ckpt: Path):
    with pytest.raises(ConfigError, match="edge-ad weights import"):
        create_model("dinomaly-tiny", pretrained=True)
    wcache.import_weights("dinomaly-tiny", tiny_ckpt)
    m = create_model("dinomaly-tiny", pretrained=True)
    ref = torch.load(tiny_ckpt, weights_only=True)
    assert all(torch.equal(v, ref[k]) for k, v in m.encoder.state_dict().items())
    assert m.encoder_weights == "file:" + hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()


def test_pretrained_offline_without_cache_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # Hugging Face's own offline mode: its cache only, no network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"not in the offline cache .*HF_HUB_OFFLINE is set.*edge-ad weights import"):
        create_model("dinomaly-b", pretrained=True)


def test_fetch_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ConfigError, match=r"huggingface.co/timm/vit_small_patch14_reg4_dinov2.lvd142m.*weights import"):
        wcache.fetch_weights("dinomaly-s")
    with pytest.raises(ConfigError, match="no download source"):
        wcache.fetch_weights("dinomaly-tiny")


def test_offline_mode_uses_the_hugging_face_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """HF_HUB_OFFLINE: huggingface_hub is asked for its local copy only (no probe of our own, no download)."""
    import huggingface_hub
    import torch

    seen: dict[str, object] = {}
    ckpt = tmp_path / "hf_copy.pth"
    torch.save({"w": torch.zeros(2)}, ckpt)

    def fake(repo_id: str, filename: str, local_files_only: bool = False, **kw: object) -> str:
        seen.update(repo=repo_id, local_only=local_files_only)
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = wcache.fetch_weights("dinomaly-s")
    assert seen == {"repo": "timm/vit_small_patch14_reg4_dinov2.lvd142m", "local_only": True} and path.is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    wcache.fetch_weights("dinomaly-s")
    assert seen["local_only"] is False


def test_cli_weights_import_and_list(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["weights", "import", "dinomaly-tiny", str(tiny_ckpt)]) == 0
    capsys.readouterr()
    assert main(["weights", "list", "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert list(index) == [TINY_KEY] and index[TINY_KEY]["bytes"] == tiny_ckpt.stat().st_size
    assert main(["weights", "import", "dinomaly-tiny", str(tiny_ckpt.parent / "absent.pth")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_models_json(capsys: pytest.CaptureFixture[str]):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"name", "family", "params_total", "params_trainable", "input_size", "paper", "test_only", "weights"}
    assert all(set(r) == keys for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert sorted(by_name) == list_models() and {"dinomaly-s", "dinomaly-b", "dinomaly-l", "dinomaly-tiny"} <= set(
        by_name
    )
    assert by_name["dinomaly-b"]["params_total"] == 148_007_424 and by_name["dinomaly-b"]["input_size"] == [392, 392]
    assert by_name["dinomaly-tiny"]["test_only"] is True and by_name["dinomaly-l"]["test_only"] is False
