"""Where numba keeps compiled kernels: ``NUMBA_CACHE_DIR`` defaults to ``<repo>/.numba-cache`` when unset (and the
repository is writable), so compiled kernels survive across processes.

A module of its own, standard library only, imported first by every module that imports numba (the research
kernels, the strategies' rolling kernel): numba reads the variable when it is imported.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        os.environ["NUMBA_CACHE_DIR"] = str(repo / ".numba-cache")


default_cache_dir()
