"""Outcome tallies of the hostile suite (see conftest.py): clear error, crash, accepted-bad, accepted."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from edge_ad.errors import EdgeADError


class Tally:
    """Outcome counts per category; `attempt` runs one try and classifies it."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.crashes: list[str] = []
        self.accepted_bad: list[str] = []

    def attempt(self, category: str, name: str, fn: Callable[[], Any], *, bad: bool = True,
                may_pass: bool = False) -> str:
        """Run fn: 'clear' (EdgeADError), 'crash' (other exception), 'accepted-bad' (bad input returned normally
        when it must be refused), 'accepted' (returned, allowed)."""
        self.counts[category]["tries"] += 1
        try:
            fn()
        except EdgeADError:
            outcome = "clear"
        except Exception as e:
            outcome = "crash"
            self.crashes.append(f"{category}/{name}: {type(e).__name__}: {e}")
        else:
            outcome = "accepted" if (may_pass or not bad) else "accepted-bad"
            if outcome == "accepted-bad":
                self.accepted_bad.append(f"{category}/{name}")
        self.counts[category][outcome] += 1
        return outcome

    def count(self, category: str, outcome: str, n: int = 1) -> None:
        """Record outcomes measured another way (e.g. refused Modbus writes)."""
        self.counts[category]["tries"] += n
        self.counts[category][outcome] += n

    def check(self, *categories: str) -> None:
        """Assert 0 crashes and 0 accepted-bad in these categories."""
        crashes = [c for c in self.crashes if c.split("/")[0] in categories]
        bad = [c for c in self.accepted_bad if c.split("/")[0] in categories]
        assert not crashes, f"{len(crashes)} crash(es): {crashes[:5]}"
        assert not bad, f"{len(bad)} bad input(s) accepted: {bad[:10]}"


#: one tally for the whole session (conftest writes it out)
TALLY = Tally()
