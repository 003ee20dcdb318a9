"""A worker process of ``parallel.run_tasks(executor="processes")``: ``python -m qts.research._worker``.

It reads (fn, task) pickles from stdin and writes (ok, result or exception) pickles to stdout, each
preceded by its length (8 bytes, little-endian), until stdin closes. Started as a plain
``python -m`` process, it never imports the caller's ``__main__`` (what multiprocessing's spawn does,
and what made a script without an ``if __name__ == "__main__"`` guard re-run itself in every worker and
crash with BrokenProcessPool).
"""

from __future__ import annotations

import os
import pickle
import sys


def read_msg(f):
    head = f.read(8)
    if len(head) < 8:
        return None
    n = int.from_bytes(head, "little")
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def write_msg(f, data: bytes) -> None:
    f.write(len(data).to_bytes(8, "little"))
    f.write(data)
    f.flush()


def main() -> None:
    chan_in, chan_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a task's prints must not corrupt the channel
    try:
        import numba

        numba.set_num_threads(int(os.environ.get("QTS_WORKER_THREADS", "1")))
    except Exception:  # pragma: no cover - numba missing
        pass
    while True:
        data = read_msg(chan_in)
        if data is None:
            return
        try:
            fn, task = pickle.loads(data)
            out = pickle.dumps((True, fn(task)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as e:  # noqa: BLE001 - sent back to the caller, raised there
            try:
                out = pickle.dumps((False, e), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                out = pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}")))
        write_msg(chan_out, out)


if __name__ == "__main__":
    main()
