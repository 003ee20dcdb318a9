"""The notifier: ``notify(event)`` returns at once; each sink sends on its own background thread.

Per sink: a bounded queue (full: the event is dropped and counted), a token bucket (empty: dropped
and counted; ``critical`` events such as the kill switch skip the bucket), short timeouts. A failing
or slow sink is logged (masked) and never blocks trading or the other sinks. Drops are logged at
once to the ``qts.notify`` logger and summarized in the events table at most once a minute (and at
shutdown). ``flush()`` waits (bounded) for the queues to drain; the process-wide notifiers are
flushed at exit with a short deadline so a one-shot command still delivers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field

from .masking import Masker
from ..token_bucket import TokenBucket
from .sinks import Sink, SinkError

log = logging.getLogger("qts.notify")
SEVERITIES = ("debug", "info", "warning", "error", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
ICON = {"debug": "", "info": "", "warning": "\u26a0\ufe0f ", "error": "\u2757 ", "critical": "\U0001f6a8 "}
_STOP = object()


@dataclass
class Event:
    kind: str                      # trade, breaker, kill_switch, test, ...
    title: str
    text: str = ""
    severity: str = "info"
    data: dict = field(default_factory=dict)
    ts: int = field(default_factory=lambda: int(time.time() * 1000))

    def message(self) -> str:
        return f"{ICON.get(self.severity, '')}{self.title}" + (f"\n{self.text}" if self.text else "")

    def to_dict(self) -> dict:
        return asdict(self)


class EventWriter:
    """Writes rows to the events table from a background thread, on a connection of its own."""

    def __init__(self, home):
        self.home = home
        self._lock = threading.Lock()

    def write(self, kind: str, message: str, severity: str = "info", data: dict | None = None,
              ts: int | None = None) -> None:
        # a short-lived connection per write: notifications are rare, and a connection held open for
        # the process's life would pin the database file (and its locks) long after it was replaced
        from ..store import Store

        with self._lock:
            store = Store.open(self.home)
            try:
                store.event(kind, message, severity=severity, data=data or {}, ts=ts)
            finally:
                store.close()

    def close(self) -> None:
        pass


class _Lane:
    """One sink: its queue, bucket, thread and counters."""

    def __init__(self, sink: Sink, notifier: "Notifier", rate_per_s: float, burst: int, queue_size: int,
                 min_level: str = "debug"):
        self.sink, self.notifier = sink, notifier
        self.min_rank = RANK.get(min_level, 0)  # routing: events below this severity do not go to this sink
        self.bucket = TokenBucket(rate_per_s, burst)
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stats = {"sent": 0, "failed": 0, "dropped_rate_limit": 0, "dropped_queue_full": 0, "last_error": None,
                      "last_sent_ts": None}
        self._unreported = {"dropped_rate_limit": 0, "dropped_queue_full": 0}
        self._last_report = 0.0
        self._busy = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"qts-notify-{sink.name}", daemon=True)
        self.thread.start()

    def routes(self, event: Event) -> bool:
        """Whether this sink takes the event at all (``qts notify test`` and the daily summary go everywhere)."""
        return event.kind in ("test", "summary") or RANK.get(event.severity, 1) >= self.min_rank

    def offer(self, event: Event) -> bool:
        if not self.routes(event):
            return False
        if event.severity != "critical" and not self.bucket.try_take():
            self._drop("dropped_rate_limit", event)
            return False
        try:
            self.q.put_nowait(event)
            return True
        except queue.Full:
            self._drop("dropped_queue_full", event)
            return False

    def _drop(self, why: str, event: Event) -> None:
        with self._lock:
            self.stats[why] += 1
            self._unreported[why] += 1
            first = self._unreported[why] == 1
        if first:  # one line per burst; the count goes to the events table with the next summary
            log.warning(self.notifier.masker(f"notification via {self.sink.name} dropped "
                                             f"({why.replace('dropped_', '')}): {event.title} (further drops counted)"))

    def idle(self) -> bool:
        return self.q.unfinished_tasks == 0 and not self._busy

    def _run(self) -> None:
        while True:
            try:
                item = self.q.get(timeout=1.0)
            except queue.Empty:
                self._report_drops()
                continue
            if item is _STOP:
                self.q.task_done()
                self._report_drops(force=True)
                return
            self._busy = True
            try:
                self._deliver(item)
            finally:
                self._busy = False
                self.q.task_done()
            self._report_drops()

    def _deliver(self, event: Event) -> None:
        masker = self.notifier.masker
        try:
            self.sink.send(event)
            self.stats["sent"] += 1
            self.stats["last_sent_ts"] = int(time.time() * 1000)
        except Exception as e:  # a sink must never take the thread down
            msg = str(e) if isinstance(e, SinkError) else f"{self.sink.name}: {e.__class__.__name__}: {e}"
            msg = masker(msg)
            self.stats["failed"] += 1
            self.stats["last_error"] = msg
            log.warning("notification via %s failed: %s", self.sink.name, msg)
            if self.sink.name != "log":
                self.notifier.record("warning", f"notification via {self.sink.name} failed: {msg}",
                                     {"sink": self.sink.name, "event": event.kind, "title": masker(event.title)})

    def _report_drops(self, force: bool = False) -> None:
        with self._lock:
            n = sum(self._unreported.values())
            if not n or (not force and time.monotonic() - self._last_report < self.notifier.drop_report_s):
                return
            counts = dict(self._unreported)
            self._unreported = {k: 0 for k in self._unreported}
            self._last_report = time.monotonic()
        self.notifier.record("warning", f"{n} notification(s) via {self.sink.name} dropped "
                                        f"(rate limit {counts['dropped_rate_limit']}, queue full {counts['dropped_queue_full']})",
                             {"sink": self.sink.name, **counts, "total": dict(self.stats)})


class Notifier:
    def __init__(self, sinks: list[Sink], rate_per_min: float = 20.0, burst: int = 5, queue_size: int = 100,
                 masker: Masker | None = None, writer: EventWriter | None = None, drop_report_s: float = 60.0,
                 send_replays: bool = False, min_level: str = "debug"):
        self.masker = masker or Masker([s for sink in sinks for s in getattr(sink, "secrets", ())])
        self.writer = writer
        self.drop_report_s = drop_report_s
        self.send_replays = send_replays
        self.closed = False
        # routing: the events-table sink takes every level; the others (chat, Telegram, email) ``min_level`` and up
        self.min_level = min_level
        self.lanes = [_Lane(s, self, rate_per_min / 60.0, burst, queue_size,
                            "debug" if s.name == "log" else min_level) for s in sinks]

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self.lanes]

    def notify(self, event: Event) -> int:
        """Queue ``event`` for every sink; returns how many accepted it. Never blocks, never raises."""
        if self.closed:
            return 0
        try:
            if event.severity not in SEVERITIES:
                event.severity = "info"
            return sum(1 for lane in self.lanes if lane.offer(event))
        except Exception as e:  # pragma: no cover - belt and braces
            log.warning("notify failed: %s", self.masker(f"{e.__class__.__name__}: {e}"))
            return 0

    def record(self, severity: str, message: str, data: dict | None = None) -> None:
        """A row about the notifier itself (failures, drops) in the events table, masked."""
        if self.writer is None:
            return
        try:
            self.writer.write("notify", self.masker(message), severity,
                              {k: (self.masker(v) if isinstance(v, str) else v) for k, v in (data or {}).items()})
        except Exception as e:
            log.warning("cannot record a notify event: %s", self.masker(f"{e.__class__.__name__}: {e}"))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queue is drained (or ``timeout``). True when all were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(lane.idle() for lane in self.lanes):
                return True
            time.sleep(0.01)
        return all(lane.idle() for lane in self.lanes)

    def close(self, timeout: float = 3.0) -> bool:
        if self.closed:
            return True
        done = self.flush(timeout)
        self.closed = True
        for lane in self.lanes:
            try:
                lane.q.put(_STOP, timeout=0.1)
            except queue.Full:
                pass
        end = time.monotonic() + 0.5
        for lane in self.lanes:
            lane.thread.join(max(0.0, end - time.monotonic()))
        if self.writer is not None:
            self.writer.close()
        return done

    def stats(self) -> dict:
        return {lane.sink.name: dict(lane.stats) for lane in self.lanes}

    def describe(self) -> list[dict]:
        return [{**lane.sink.describe(), "min_level": SEVERITIES[lane.min_rank]} for lane in self.lanes]
