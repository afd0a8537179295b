"""The hostile suite (`pytest tests/hostile`): generated bad images, broken packages, symlink and pickle attacks,
spoofing attempts on the PLC surfaces. Every try is tallied as a clear error (EdgeADError naming the problem),
a crash (any other exception), accepted-bad (bad input that got through) or accepted (harmless input, e.g. a bit
flip in raw pixels no format can detect). Set EDGE_AD_HOSTILE_REPORT=FILE to write the tallies as JSON
(docs/reliability.md quotes them)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from hostile_tally import TALLY, Tally


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    yield TALLY
    out = os.environ.get("EDGE_AD_HOSTILE_REPORT")
    if out:
        report = {k: dict(v) for k, v in sorted(TALLY.counts.items())}
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"categories": report, "crashes": TALLY.crashes, "accepted_bad": TALLY.accepted_bad}, f,
                      indent=2)
