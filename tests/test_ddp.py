"""Data-parallel training through torchrun: 2 CPU processes with the gloo backend."""

import json
import os
import subprocess
import sys

import pytest

from edge_ad.data.synth import generate


@pytest.mark.slow
def test_torchrun_two_process_cpu_training(tmp_path):
    data = tmp_path / "data"
    generate(data, categories=None, per_category=6, size=96, seed=1)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "edge_ad.cli.main", "train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(out),
           "--iters", "2", "--batch", "2", "--no-pretrained", "--workers", "0", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2
    assert (out / "model.safetensors").is_file() and (out / "thresholds.json").is_file()
