"""Traceability: every inspection of a station as a durable database row, queried by `edge-ad results`."""

from edge_ad.traceability.store import DECISIONS, Retention, TraceRecorder, TraceStore, open_readonly

__all__ = ["DECISIONS", "Retention", "TraceRecorder", "TraceStore", "open_readonly"]
