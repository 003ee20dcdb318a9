"""Run independent tasks (sweep chunks, walk-forward folds) inline, in local processes, or on Dask.

``run_tasks(fn, tasks, executor=...)`` returns ``[fn(t) for t in tasks]`` in order. ``fn`` must be
a module-level function and the tasks picklable.

executor:
- ``"inline"``: in this process (numba kernels still use every core through ``prange``);
- ``"processes"``: ``workers`` local worker processes started as ``python -m qts.research._worker``
  (tasks and results travel as pickles over their stdin/stdout). They never import the caller's
  ``__main__``, so a script without an ``if __name__ == "__main__"`` guard works (multiprocessing's
  spawn re-ran such a script in every worker: BrokenProcessPool). Each worker pins numba to one thread
  so ``workers`` processes do not oversubscribe the cores;
- ``"dask"``: ``distributed.Client`` given as ``client=`` or the one running in this process
  (``distributed.get_client()``), else one connected to ``$QTS_DASK_SCHEDULER``; with none of them,
  dask's local multiprocessing scheduler. Needs the ``dask`` package (and ``distributed`` for a
  cluster): ``pip install "dask[distributed]"``.
- ``"auto"``: see ``choose``: in-process, or the Dask cluster the caller pointed at.
Ray is not supported in this build (not installed here; use Dask).
"""

from __future__ import annotations

import os
import sys

EXECUTORS = ("auto", "inline", "processes", "dask")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def cluster_address() -> str | None:
    """``$QTS_DASK_SCHEDULER`` (e.g. ``tcp://10.0.0.5:8786``), or None."""
    return os.environ.get("QTS_DASK_SCHEDULER") or None


def choose(executor: str, n_tasks: int, est_seconds: float, workers: int | None = None, client=None) -> str:
    """Resolve ``"auto"``.

    The rule: ``"dask"`` when the caller pointed at a cluster (``client=``, ``$QTS_DASK_SCHEDULER``, or a
    ``distributed.Client`` already running in this process); otherwise ``"inline"``, always. Local
    processes are never chosen automatically, because nothing measured them faster: the kernels already
    run every core in-process (numba ``prange`` over combinations), so a pool adds process start (~1 s
    each: numpy, numba, the cached kernels), a pickled copy of the candles per task and one indicator
    cache per worker. Measured on this project's 2-core machine (issue 13): slower than in-process, and
    past 2 GB where in-process stayed under 1 GB (10,000 combinations on 287,335 bars). In-process
    memory is bounded by the sweep's chunking instead. ``"processes"`` stays available to ask for.
    ``n_tasks``, ``est_seconds`` and ``workers`` are kept for callers; a rule that uses them must come
    with a benchmark showing the pool faster on that kind of machine."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor: unknown {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor != "auto":
        return executor
    if client is not None or cluster_address():
        return "dask"
    if "distributed" in sys.modules:  # a Client may run in this process (never imported just to look)
        try:
            from distributed import get_client

            get_client()
            return "dask"
        except (ValueError, ImportError):
            pass
    return "inline"


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
            return _run_processes(fn, tasks, min(workers or cpu_count(), len(tasks)), bar)
        return _run_dask(fn, tasks, workers, client, bar)
    finally:
        if bar:
            bar.close()


def _run_processes(fn, tasks: list, n_workers: int, bar) -> list:
    """Tasks on ``n_workers`` ``qts.research._worker`` processes, each fed by a thread of this process
    (one task at a time per worker, results in task order); the first failure is raised here once every
    worker has stopped."""
    import pickle
    import subprocess
    import threading
    from pathlib import Path

    from ._worker import read_msg, write_msg

    lib = str(Path(__file__).resolve().parents[2])  # the directory holding the package qts
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([lib, *filter(None, [os.environ.get("PYTHONPATH")])])}
    out: list = [None] * len(tasks)
    errors: list = []
    lock = threading.Lock()
    todo = iter(range(len(tasks)))

    def feed(proc) -> None:
        try:
            while not errors:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                write_msg(proc.stdin, pickle.dumps((fn, tasks[i]), protocol=pickle.HIGHEST_PROTOCOL))
                data = read_msg(proc.stdout)
                if data is None:
                    raise RuntimeError(f"executor \"processes\": worker {proc.pid} died (exit {proc.wait()})")
                ok, val = pickle.loads(data)
                if not ok:
                    raise val
                out[i] = val
                if bar:
                    with lock:
                        bar.update(1)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    procs = [subprocess.Popen([sys.executable, "-m", "qts.research._worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env) for _ in range(n_workers)]
    try:
        threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if errors:
        raise errors[0]
    return out


_ENV_CLIENTS: dict = {}


def _env_client(addr: str):
    """One Client per $QTS_DASK_SCHEDULER address for this process (not a new connection per sweep)."""
    from distributed import Client

    c = _ENV_CLIENTS.get(addr)
    if c is None or c.status not in ("running", "connecting"):
        c = _ENV_CLIENTS[addr] = Client(addr, set_as_default=False)
    return c


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
                addr = cluster_address()
                client = _env_client(addr) if addr else None
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
