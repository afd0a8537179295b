"""Fixed maps and masks for the official-protocol metric fixtures (tests/test_protocols.py pins the figures the
official evaluation codes produce on them; benchmarks/sbs_eval_official.py computes those figures)."""

from __future__ import annotations

import cv2
import numpy as np


def category(seed: int, n: int = 14, size: int = 48, scale: float = 1.0) -> dict[str, np.ndarray]:
    """One category: labels [n] (half anomalous), masks [n,size,size] uint8 {0,1} (1-3 blobs per anomalous
    image, some touching diagonally; odd seeds: image 1 anomalous with an empty mask), maps float32 (smooth noise
    + signal in and near the defects, rounded to create ties), scores = map max. `scale` pushes maps outside
    [0, 1] (anomalib's sigmoid path; 40 saturates it in float32)."""
    rng = np.random.default_rng(seed)
    labels = np.array([i % 2 for i in range(n)], np.int64)
    masks = np.zeros((n, size, size), np.uint8)
    maps = np.zeros((n, size, size), np.float32)
    for i in range(n):
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
        if labels[i]:
            for _ in range(int(rng.integers(1, 4))):
                y, x = rng.integers(2, size - 10, 2)
                h, w = rng.integers(2, 9, 2)
                masks[i, y:y + h, x:x + w] = 1
            if rng.random() < 0.5:  # two regions meeting at a corner: one 8-connected region
                masks[i, 2:5, 2:5] = 1
                masks[i, 5:8, 5:8] = 1
            signal = cv2.GaussianBlur(masks[i].astype(np.float32), (0, 0), 1.5) * float(rng.uniform(0.0, 0.5))
            noise = noise + signal
        elif rng.random() < 0.5:  # a hot spot on a good image: image scores overlap
            y, x = rng.integers(4, size - 4, 2)
            noise[y - 2:y + 2, x - 2:x + 2] += float(rng.uniform(0.05, 0.3))
        maps[i] = np.round(noise * 500) / 500
    if seed % 2:  # an anomalous image whose mask is empty: ADer labels images by their mask, the others by folder
        masks[1] = 0
    maps = (maps * np.float32(scale)).astype(np.float32)
    scores = maps.reshape(n, -1).max(axis=1)
    return {"labels": labels, "masks": masks, "maps": maps, "scores": scores}


#: the fixtures: name -> (seed, scale)
FIXTURES = {"a": (3, 0.8), "b": (12, 0.5), "over1": (7, 1.6), "wide": (5, 40.0)}
