"""Resume state without pickle: exact round trip of optimizer/scheduler/RNG state, refusal of forged files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.errors import ConfigError
from edge_ad.train.optim import WarmCosineScheduler
from edge_ad.train.resume_state import FORMAT, load_state, save_state


def test_round_trip_restores_an_adamw_run_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.999))
    sched = WarmCosineScheduler(opt, 1e-3, 1e-4, 20, 2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3, "rng": torch.get_rng_state(),
             "odd": {"inf": float("inf"), "tuple": (1, 2.5), 7: None, "arr": np.arange(3, dtype=np.float64)}}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 3 and torch.equal(back["rng"], state["rng"])
    assert back["odd"]["inf"] == float("inf") and back["odd"]["tuple"] == (1, 2.5) and back["odd"][7] is None
    np.testing.assert_array_equal(back["odd"]["arr"], np.arange(3))
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(opt2.state_dict()["state"][0][k], v), k
    sched2 = WarmCosineScheduler(opt2, 1e-3, 1e-4, 20, 2)
    sched2.load_state_dict(back["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_forged_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save as st_save

    bad = {"junk": b"\x80\x04\x95not safetensors",
           "format": st_save({"x": torch.zeros(1)}, metadata={"format": "other", "state": "{}"}),
           "json": st_save({"x": torch.zeros(1)}, metadata={"format": FORMAT, "state": "{not json"}),
           "deep": st_save({"x": torch.zeros(1)}, metadata={"format": FORMAT, "state": "[" * 5000 + "]" * 5000}),
           "dangling": st_save({"x": torch.zeros(1)}, metadata={"format": FORMAT, "state": json.dumps({"t": "t9"})}),
           "unknown": st_save({"x": torch.zeros(1)}, metadata={"format": FORMAT,
                                                             "state": json.dumps({"__reduce__": "os.system"})})}
    for name, data in bad.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        with pytest.raises(ConfigError, match=str(p).replace(".", r"\.")):
            load_state(p)
    with pytest.raises(ConfigError, match="cannot store a object"):
        save_state(tmp_path / "x.safetensors", {"f": object()})
