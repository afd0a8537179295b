"""The generic training loop: any registered model, multi-class by default, single process or DDP (torchrun)."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from edge_ad import __version__
from edge_ad.data.mvtec import fingerprint, load_samples, split_holdout
from edge_ad.data.views import build_geometry, views_dataset, wants_geometry
from edge_ad.errors import ConfigError
from edge_ad.evaluate import rundir
from edge_ad.evaluate.inference import predict_samples
from edge_ad.evaluate.protocols import get_protocol
from edge_ad.evaluate.thresholds import derive_thresholds
from edge_ad.fileio import atomic_write_text
from edge_ad.models.device import resolve_device
from edge_ad.models.registry import create_model
from edge_ad.train.amp import PrecisionStep, resolve_precision
from edge_ad.train.optim import build_optimizer, build_scheduler
from edge_ad.train.options import paper_config
from edge_ad.train.resume_state import load_state, save_state

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _TrainStep(torch.nn.Module):
    """The model's training forward (`training_loss`) as a module's `forward`, so DistributedDataParallel sees it
    and all-reduces the gradients of the trainable parameters during backward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.model.training_loss(x, step)  # type: ignore[operator]


class _Dist:
    """torchrun context (WORLD_SIZE/RANK/LOCAL_RANK): process group, DDP wrapping, averaged logging, barriers.

    Multi-node: `torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT ...` on every
    node; NCCL on GPUs, gloo on CPUs."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The training step module, under DistributedDataParallel when there are several processes (it
        broadcasts rank 0's weights and buffers now and averages gradients in every backward)."""
        step = _TrainStep(model)
        if not self.enabled:
            return step
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)

    def average_scalar(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], device=device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _forever(loader: DataLoader, sampler: DistributedSampler | None) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(cfg: dict[str, Any], *, resume: bool = False, progress: bool = True) -> Path:
    """Train `cfg["model"]` on the good images of `cfg["data"]` and write a run directory; returns its path.

    The run holds the resolved config, full weights (safetensors), the optimiser checkpoint for `resume`,
    the held-out good images and the thresholds derived from them.
    """
    out = Path(cfg["out"])
    proto = get_protocol(cfg.get("protocol", "edge-ad"), cfg["model"])
    samples = load_samples(cfg["data"], cfg["categories"], split="train")
    categories = sorted({s.category for s in samples})
    if proto.per_category and len(categories) > 1:
        return _train_per_category(cfg, categories, resume=resume, progress=progress)
    device = resolve_device(cfg["device"])
    dist = _Dist(device)
    seed_everything(cfg["seed"] + dist.rank)

    if not proto.holdout:
        if cfg["val_fraction"]:
            log.info("protocol %s: trains on all good training images (no %.0f%% hold-out)", proto.name,
                     100 * cfg["val_fraction"])
        cfg = {**cfg, "val_fraction": 0.0}
    train_set, holdout = split_holdout(samples, cfg["val_fraction"], seed=cfg["seed"])
    if not train_set:
        raise ConfigError(f"{cfg['data']}: no training images left after holding out {cfg['val_fraction']:.0%}")
    cfg = _official_length(cfg, proto, len(train_set))

    model = create_model(
        cfg["model"],
        pretrained=cfg["pretrained"] and not cfg["weights"],
        weights=cfg["weights"],
        **rundir.model_kwargs(cfg),
    ).to(device)
    rundir.apply_protocol_preprocess(model, cfg)
    if wants_geometry(cfg):
        rundir.use_geometry(model, build_geometry(cfg, samples))
    if cfg.get("init_from") and not resume:
        src = init_run(cfg["init_from"], cfg["model"])
        rundir.load_weights(model, src / rundir.WEIGHTS)
        log.info("fine-tuning from %s", src)
    precision = resolve_precision(cfg["amp"], cfg["channels_last"], model, device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mixed = PrecisionStep(precision, device)
    log.info("training precision: %s%s (%s)", precision.amp if precision.amp != "off" else "fp32",
             ", channels-last" if precision.channels_last else "", precision.reason)
    encoder_weights = str(getattr(model, "encoder_weights", "unknown"))
    params = model.trainable_parameters()
    opt = build_optimizer(cfg["optimizer"], model.param_groups(cfg["weight_decay"]), cfg)
    sched = build_scheduler(cfg["scheduler"], opt, cfg)

    ds = views_dataset(train_set, model.preprocess, model.geometry)
    batch = cfg["batch"]
    if len(ds) < batch * dist.world:
        log.warning("only %d training views for batch %d x %d processes: using batch %d",
                    len(ds), batch, dist.world, max(1, len(ds) // dist.world))
        batch = max(1, len(ds) // dist.world)
    # one sampler for 1 and N processes: with N, process r takes every N-th image of the same seeded order, so a
    # step sees the same images as one process with batch x N (the gradients DDP averages are the same)
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=dist.world, rank=dist.rank,
                                                          seed=cfg["seed"])
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, num_workers=cfg["workers"],
                        persistent_workers=cfg["workers"] > 0)

    start = 0
    ckpt_path = out / rundir.CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            legacy = " (its checkpoint_last.pt is a pickle from an older edge-ad: not loaded, since unpickling can " \
                     "run code; start a new run)" if (out / rundir.LEGACY_CHECKPOINT).exists() else ""
            raise ConfigError(f"{out}: --resume given but there is no {rundir.CHECKPOINT}{legacy}")
        saved = rundir.read_config(out)
        if saved.get("model") != cfg["model"]:
            raise ConfigError(f"{out}: run was trained as {saved.get('model')!r}, cannot resume as {cfg['model']!r}")
        rundir.load_weights(model, out / rundir.WEIGHTS)
        start = _resume(ckpt_path, opt, sched)
        log.info("resumed %s at step %d", out, start)
    elif dist.main and (out / rundir.CONFIG).exists():
        raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")

    fp = fingerprint(samples, cfg["data"])
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / rundir.CONFIG, yaml.safe_dump(cfg, sort_keys=True))
        rundir.write_json(out / rundir.VAL_SPLIT, {"holdout": [str(s.path) for s in holdout]})
        if model.geometry is not None:
            rundir.save_geometry(out, model.geometry)
        rundir.write_json(out / rundir.RUN_INFO, {
            "edge_ad_version": __version__, "model": cfg["model"], "categories": categories,
            "encoder_weights": encoder_weights, "data_fingerprint": fp, "n_train": len(train_set),
            "n_holdout": len(holdout), "world_size": dist.world, "device": str(device),
            "precision": precision.to_dict(), "protocol": proto.describe(),
        })
    if encoder_weights == "random-init" and dist.main:
        log.warning("training on a RANDOM-INIT encoder: expect weak heatmaps (this is expected, not a bug)")

    if not resume:
        # statistics some models need before training (e.g. channel mean/std of frozen features)
        stats_loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=cfg["workers"])
        model.eval()
        with torch.no_grad():
            model.fit_constants(stats_loader, device)
    model.train()
    step_fn = dist.wrap(model, device)
    it = _forever(loader, sampler)
    log_f = open(out / rundir.TRAIN_LOG, "a") if dist.main else None  # noqa: SIM115 - closed in the finally below
    bar = tqdm(total=cfg["iters"], initial=start, desc=f"train {cfg['model']}", disable=not (progress and dist.main),
               dynamic_ncols=True)
    t_last, step = time.perf_counter(), start
    try:
        for step in range(start, cfg["iters"]):
            x = mixed.prepare(next(it)["image"].to(device, non_blocking=True))
            with mixed.autocast():
                loss = step_fn(x, step)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"training diverged at step {step}: loss is {loss.item()}; lower lr or check the data"
                    + ("" if precision.amp == "off" else f" (or train with --amp off instead of {precision.amp})")
                )
            opt.zero_grad(set_to_none=True)
            # under DDP: gradients are averaged over the processes in backward
            mixed.backward_and_step(loss, opt, params, cfg["grad_clip"])
            if sched is not None:
                sched.step()
            if (step + 1) % cfg["log_every"] == 0 or step + 1 == cfg["iters"]:
                loss_v = dist.average_scalar(loss.item(), device)
                now = time.perf_counter()
                rate = cfg["log_every"] / max(now - t_last, 1e-9)
                t_last = now
                lr = opt.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", its=f"{rate:.2f}")
                if log_f:
                    log_f.write(json.dumps({"step": step + 1, "loss": loss_v, "lr": lr, "it_per_s": rate}) + "\n")
                    log_f.flush()
            bar.update(1)
            if dist.main and (step + 1) % cfg["save_every"] == 0 and step + 1 < cfg["iters"]:
                _checkpoint(model, opt, sched, step + 1, out, cfg)
    finally:
        bar.close()
        if log_f:
            log_f.close()

    if dist.main:
        # output normalisation some models fit on held-out good images (never on test data); the official
        # protocols hold nothing out, so there it is fitted on the training images
        reference = holdout if proto.holdout else train_set
        if reference:
            model.eval()
            with torch.no_grad():
                model.calibrate(
                    DataLoader(views_dataset(reference, model.preprocess, model.geometry), batch_size=batch,
                               shuffle=False), device
                )
        _checkpoint(model, opt, sched, cfg["iters"], out, cfg)
        thresholds = derive_run_thresholds(model, reference, cfg, device, in_sample=not proto.holdout)
        rundir.write_json(out / rundir.THRESHOLDS, thresholds)
    dist.barrier()
    dist.close()
    return out


def init_run(spec: str | Path, model_name: str) -> Path:
    """The run directory `--init-from` names: a run, or a package exported from one (manifest training.run); its
    model must be `model_name`. ConfigError naming what is missing."""
    path = Path(spec)
    if (path / "manifest.json").is_file():
        from edge_ad.runtime.package import load_package

        run = (load_package(path).manifest.get("training") or {}).get("run")
        if not run:
            raise ConfigError(f"{path}: --init-from: the package records no training run (manifest training.run): "
                              "give the run directory")
        path = Path(run)
    if not (path / rundir.WEIGHTS).is_file():
        raise ConfigError(f"{path}: --init-from: expected a run directory with {rundir.WEIGHTS}")
    trained = rundir.read_config(path).get("model")
    if trained != model_name:
        raise ConfigError(f"{path}: --init-from: the run trained {trained!r}, this run trains {model_name!r}")
    return path


def _checkpoint(
    model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, step: int, out: Path, cfg: dict[str, Any]
) -> None:
    rundir.save_weights(model, out / rundir.WEIGHTS, {"model": cfg["model"], "step": str(step)})  # type: ignore[arg-type]
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched is not None else None,
             "step": step, "rng": torch.get_rng_state()}
    save_state(out / rundir.CHECKPOINT, state)


def _resume(path: Path, opt: torch.optim.Optimizer, sched: Any) -> int:
    """Restore optimizer, scheduler and RNG from a resume state file (no unpickling); returns the step."""
    ck = load_state(path)
    missing = [k for k in ("optimizer", "scheduler", "step", "rng") if k not in ck]
    if missing or not isinstance(ck["step"], int) or not isinstance(ck["rng"], torch.Tensor):
        raise ConfigError(f"{path}: resume state lacks {missing or 'an integer step and an RNG tensor'}")
    try:
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck["scheduler"]:
            sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"{path}: resume state does not fit this run's optimizer/scheduler ({e})") from None
    return int(ck["step"])


def _official_length(cfg: dict[str, Any], proto: Any, n_train: int) -> dict[str, Any]:
    """The official protocol's epochs as iterations over this dataset, unless iters/batch were changed from the
    paper's configuration (then kept, and logged as a deviation)."""
    if proto.epochs is None:
        return cfg
    paper = paper_config(cfg["model"])
    if cfg["iters"] != paper.get("iters") or cfg["batch"] != paper.get("batch", proto.batch):
        log.warning("protocol official: iters %d / batch %d differ from the paper: not the official %d epochs at "
                    "batch %d", cfg["iters"], cfg["batch"], proto.epochs, proto.batch)
        return cfg
    iters = proto.train_iters(n_train, cfg["iters"])
    log.info("protocol official: %d epochs of %d images at batch %d = %d iterations", proto.epochs, n_train,
             proto.batch, iters)
    return {**cfg, "iters": iters, "batch": proto.batch}


def _train_per_category(cfg: dict[str, Any], categories: list[str], *, resume: bool, progress: bool) -> Path:
    """One run per category under <out>/<category> (the official ULSAD protocol), listed in per_category.json."""
    out = Path(cfg["out"])
    if not resume and (out / rundir.PER_CATEGORY).exists():
        raise ConfigError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / rundir.CONFIG, yaml.safe_dump(cfg, sort_keys=True))
    runs = {}
    for cat in categories:
        log.info("protocol official: one model per category: training %s", cat)
        sub = out / cat
        if resume and (sub / rundir.THRESHOLDS).is_file():
            runs[cat] = cat
            continue
        train({**cfg, "categories": [cat], "out": str(sub)}, resume=resume and (sub / rundir.CONFIG).exists(),
              progress=progress)
        runs[cat] = cat
        rundir.write_json(out / rundir.PER_CATEGORY, {"protocol": "official", "model": cfg["model"], "runs": runs})
    return out


def derive_run_thresholds(model: Any, holdout: list[Any], cfg: dict[str, Any], device: torch.device,
                          in_sample: bool = False) -> dict[str, Any]:
    """Image/pixel thresholds from held-out good images at the target false-reject rate (`in_sample`: from the
    training images themselves, as the official protocols hold nothing out; optimistic)."""
    if not holdout:
        raise ConfigError("no held-out good images to derive thresholds from: set val_fraction > 0")
    preds = predict_samples(model, holdout, batch_size=min(cfg["batch"], 16), device=device, desc="thresholds")
    good_max = preds.maps.reshape(len(holdout), -1).max(axis=1)
    # a labelled validation split (<cat>/validation/<defect>/) with anomalies adds the F1-optimal threshold
    val = load_samples(cfg["data"], cfg["categories"], split="validation")
    labels = scores = None
    if any(s.label == 1 for s in val) and any(s.label == 0 for s in val):
        vpred = predict_samples(model, val, batch_size=min(cfg["batch"], 16), device=device, desc="validation")
        labels, scores = np.array([s.label for s in val]), vpred.scores
    thr = derive_thresholds(preds.scores, good_max, target_frr=cfg["target_frr"], labels=labels, scores=scores)
    thr["source"] = {"holdout_images": 0 if in_sample else len(holdout),
                     "note": "the training images themselves (official protocol: no hold-out): optimistic, "
                             "expect more false rejects on the line" if in_sample
                     else "good images held out of train/good",
                     "validation_images": len(val) if labels is not None else 0}
    return thr
