"""Helpers for the benchmarks: locate the shared data, measure peak memory, print a table."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def shared_data() -> Path | None:
    p = Path(os.environ.get("QTS_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return p if (p / "ohlcv").is_dir() else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:42} {value:>16}  {note}")
