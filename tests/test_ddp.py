"""Data-parallel training through torchrun with DistributedDataParallel: 2 CPU processes (gloo) with batch 2 each
end with the same weights as 1 process with batch 4 (the same images per step, gradients averaged by DDP)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from edge_ad.data.synth import generate
from edge_ad.models import create_model
from edge_ad.models.catalog import CARDS

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

ARGS = ["--model", "dinomaly-tiny", "--iters", "3", "--no-pretrained", "--workers", "0", "--no-progress",
        "--device", "cpu", "--val-fraction", "0.25", "--scheduler", "constant", "--model-kwarg", "dropout=0",
        "--save-every", "1000"]


def _train(data, out, nproc: int, batch: int, port: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]
                if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "edge_ad.cli.main", "train", "--data", str(data), "--out", str(out), "--batch",
           str(batch), *ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    data = tmp_path / "data"
    generate(data, categories=["pcb", "fabric"], per_category=8, size=96, seed=1)  # 12 train images after holdout
    _train(data, tmp_path / "ddp", nproc=2, batch=2, port=29533)
    _train(data, tmp_path / "single", nproc=1, batch=4, port=0)
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["world_size"] == 2 and (tmp_path / "ddp" / "thresholds.json").is_file()
    ddp, single = (
        load_file(tmp_path / "ddp" / "model.safetensors"),
        load_file(tmp_path / "single" / "model.safetensors"),
    )
    torch.manual_seed(1)  # the trainer's seed: the initial weights both runs started from
    init_model = create_model("dinomaly-tiny")
    trained = sorted(n for n, p in init_model.named_parameters() if p.requires_grad)
    init = init_model.state_dict()
    frozen = [n for n, p in init_model.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(single[n], init[n]) for n in frozen), "not the runs' initial weights"
    d_ddp = torch.cat([(ddp[n] - init[n]).flatten() for n in trained])
    d_one = torch.cat([(single[n] - init[n]).flatten() for n in trained])
    assert float(d_one.norm()) > 0.01, "the weights did not train"
    # equal up to float summation order and Dinomaly's hard mining, which picks its easy points per process
    # batch (as the official DDP code does): the updates agree to better than 1 %
    assert float((d_ddp - d_one).norm() / d_one.norm()) < 0.01
    assert float(torch.nn.functional.cosine_similarity(d_ddp, d_one, dim=0)) > 0.9999


@pytest.mark.parametrize("name", sorted(n for n, c in CARDS.items() if c.test_only))
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    """DDP runs without find_unused_parameters: every trainable parameter must take part in the training loss."""
    torch.manual_seed(0)
    model = create_model(name).train()
    side = model.preprocess.crop[0]
    loss = model.training_loss(torch.randn(2, 3, side, side), step=5)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
