"""Run independent tasks (sweep chunks, walk-forward folds) inline, in local processes, or on Dask.

``run_tasks(fn, tasks, executor=...)`` returns ``[fn(t) for t in tasks]`` in order. ``fn`` must be
a module-level function and the tasks picklable.

executor:
- ``"inline"``: in this process (numba kernels still use every core through ``prange``);
- ``"processes"``: a local ``ProcessPoolExecutor`` (``spawn`` start method: the parent may already
  run numba worker threads, which must not be forked); each worker pins numba to one thread so
  ``workers`` processes do not oversubscribe the cores;
- ``"dask"``: ``distributed.Client`` given as ``client=`` or the one running in this process
  (``distributed.get_client()``), else one connected to ``$QTS_DASK_SCHEDULER``; with none of them,
  dask's local multiprocessing scheduler. Needs the ``dask`` package (and ``distributed`` for a
  cluster): ``pip install "dask[distributed]"``.
- ``"auto"``: what the caller decided is worth it (see ``choose``).
Ray is not supported in this build (not installed here; use Dask).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

EXECUTORS = ("auto", "inline", "processes", "dask")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def choose(executor: str, n_tasks: int, est_seconds: float, workers: int | None = None) -> str:
    """Resolve ``"auto"``: processes only when there is more than one task, more than one core, and
    enough work (> 5 s) to pay for starting them (~1 s each: numpy, numba, the cached kernels)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor: unknown {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor != "auto":
        return executor
    w = workers or cpu_count()
    return "processes" if n_tasks > 1 and w > 1 and est_seconds > 5.0 else "inline"


def _init_worker() -> None:
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba missing or already limited
        pass


def _progress(total: int, progress: bool | None, desc: str):
    import sys

    show = progress if progress is not None else (total > 1 and sys.stderr.isatty())
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", leave=False)


def run_tasks(fn, tasks: list, executor: str = "inline", workers: int | None = None,
              progress: bool | None = None, desc: str = "", client=None) -> list:
    if executor not in EXECUTORS or executor == "auto":
        raise ValueError(f"executor: resolve 'auto' first; allowed: {', '.join(EXECUTORS[1:])}")
    bar = _progress(len(tasks), progress, desc)
    try:
        if executor == "inline" or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(fn(t))
                if bar:
                    bar.update(1)
            return out
        if executor == "processes":
            w = min(workers or cpu_count(), len(tasks))
            out = [None] * len(tasks)
            with ProcessPoolExecutor(w, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
                futs = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
                from concurrent.futures import as_completed

                for f in as_completed(futs):
                    out[futs[f]] = f.result()
                    if bar:
                        bar.update(1)
            return out
        return _run_dask(fn, tasks, workers, client, bar)
    finally:
        if bar:
            bar.close()


def _run_dask(fn, tasks, workers, client, bar):
    try:
        import dask
    except ImportError:
        raise RuntimeError('executor "dask": the dask package is not installed; '
                           'pip install "dask[distributed]"') from None
    if client is None:
        try:
            from distributed import Client, get_client

            try:
                client = get_client()
            except ValueError:
                addr = os.environ.get("QTS_DASK_SCHEDULER")
                client = Client(addr) if addr else None
        except ImportError:
            client = None
    if client is not None:
        futs = client.map(fn, tasks, pure=False)
        out = client.gather(futs)
        if bar:
            bar.update(len(tasks))
        return list(out)
    delayed = [dask.delayed(fn)(t) for t in tasks]
    out = dask.compute(*delayed, scheduler="processes", num_workers=workers or cpu_count())
    if bar:
        bar.update(len(tasks))
    return list(out)
