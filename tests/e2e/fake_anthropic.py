"""A tiny fake of the Anthropic Messages API, enough to drive the real Claude Code CLI offline.

Standard library only. It binds 127.0.0.1 on a free port, answers in a background thread and stops by
itself after ``lifetime_s`` (or when the ``with`` block ends, whichever comes first).

Protocol (see DESIGN.md, "The CLI can be driven end to end offline"):
- ``POST /v1/messages/count_tokens`` -> ``{"input_tokens": N}``.
- ``POST /v1/messages``: the CLI also sends side requests (titles, summaries) without the Bash tool in
  ``tools``; those get a short text answer. For a request whose ``tools`` include ``Bash``, the number
  of ``tool_result`` blocks already in ``messages`` says which scripted step is next: step k answers
  with a ``tool_use`` Bash call running ``script[k]``; once the script is done, a final text block with
  ``stop_reason: end_turn``.
- With ``"stream": true`` the answer is server-sent events: message_start, content_block_start,
  content_block_delta (``input_json_delta`` for tool input, ``text_delta`` for text),
  content_block_stop, message_delta (stop_reason), message_stop.

Every request body is recorded (``server.requests``), so a test can read what the model was told,
for example the tool_result that carries a hook's deny reason.

Run by hand: ``python3 fake_anthropic.py 'echo hi' 'ls'`` prints its base URL and serves for 60 s.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "claude-sonnet-4-5"
FINAL_TEXT = "Scripted session finished."


def _tools(body: dict) -> list[str]:
    return [t.get("name", "") for t in body.get("tools") or [] if isinstance(t, dict)]


def _system_text(body: dict) -> str:
    sysp = body.get("system")
    if isinstance(sysp, list):
        return "\n".join(b.get("text", "") for b in sysp if isinstance(b, dict))
    return sysp if isinstance(sysp, str) else ""


def tool_results(body: dict) -> list[dict]:
    """Every tool_result block in the request's messages, oldest first."""
    out = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            out.extend(b for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    return out


def result_text(block: dict) -> str:
    c = block.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(b.get("text", "") for b in c if isinstance(b, dict))
    return ""


class FakeAnthropic:
    """``with FakeAnthropic(["cmd1", "cmd2"]) as fake: ... fake.base_url ...``"""

    def __init__(self, script: list, lifetime_s: float = 240.0, final_text: str = FINAL_TEXT,
                 subagents: dict[str, list] | None = None):
        """``script``: the main conversation's steps, each a Bash command (str), ``{"name": TOOL,
        "input": {...}}`` for another tool, or a function returning either when the step is due. ``subagents``: {marker: steps} for conversations whose system
        prompt contains ``marker`` (a subagent's own prompt), checked before the main script."""
        self.script = list(script)
        self.subagents = dict(subagents or {})
        self.final_text = final_text
        self.lifetime_s = lifetime_s
        self.requests: list[dict] = []        # bodies of POST /v1/messages
        self.paths: list[str] = []            # every path requested, in order
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                self._send_json(200, {})

            def do_GET(self):
                with fake.lock:
                    fake.paths.append("GET " + self.path)
                self._send_json(200, {"data": [], "has_more": False})

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?")[0]
                with fake.lock:
                    fake.paths.append("POST " + self.path)
                if path.endswith("/count_tokens"):
                    return self._send_json(200, {"input_tokens": 42})
                if not path.endswith("/v1/messages"):
                    return self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                                            "message": path}})
                with fake.lock:
                    fake.requests.append(body)
                blocks, stop = fake.answer(body)
                if body.get("stream"):
                    self._send_sse(body, blocks, stop)
                else:
                    self._send_json(200, fake.message(body, blocks, stop))

            def _send_json(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", "req_fake")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_sse(self, body, blocks, stop):
                events = []
                msg = fake.message(body, [], None)
                events.append(("message_start", {"type": "message_start", "message": msg}))
                for i, b in enumerate(blocks):
                    if b["type"] == "tool_use":
                        events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                       "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"],
                                                         "input": {}}}))
                        events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                       "delta": {"type": "input_json_delta",
                                                 "partial_json": json.dumps(b["input"])}}))
                    else:
                        events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                       "content_block": {"type": "text", "text": ""}}))
                        events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                       "delta": {"type": "text_delta", "text": b["text"]}}))
                    events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
                events.append(("message_delta", {"type": "message_delta",
                                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                                 "usage": {"output_tokens": 12}}))
                events.append(("message_stop", {"type": "message_stop"}))
                data = b"".join(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode() for name, obj in events)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("request-id", "req_fake")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # the CLI drops keep-alive sockets: not an error
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)  # stops by itself
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self.httpd:
            httpd, self.httpd = self.httpd, None
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self.httpd is not None, "server not running"
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    # -- answers -----------------------------------------------------------------------------------
    def answer(self, body: dict) -> tuple[list[dict], str]:
        script = self.script
        system = _system_text(body)
        for marker, steps in self.subagents.items():
            if marker in system:
                script = steps
                break
        else:
            if "Bash" not in _tools(body):
                return [{"type": "text", "text": "ok"}], "end_turn"
        step = len(tool_results(body))
        if step < len(script):
            item = script[step]
            if callable(item):  # decided when the step is due (e.g. from the state the previous step left)
                item = item()
            if isinstance(item, str):
                item = {"name": "Bash", "input": {"command": item, "description": f"scripted step {step + 1}"}}
            return [{"type": "tool_use", "id": f"toolu_fake{step:02d}{uuid.uuid4().hex[:12]}", "name": item["name"],
                     "input": item["input"]}], "tool_use"
        return [{"type": "text", "text": self.final_text}], "end_turn"

    def message(self, body: dict, blocks: list[dict], stop: str | None) -> dict:
        return {"id": "msg_fake" + uuid.uuid4().hex[:16], "type": "message", "role": "assistant",
                "model": body.get("model") or MODEL, "content": blocks, "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": 42, "output_tokens": 12, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0}}

    def agent_requests(self) -> list[dict]:
        """The requests that offered the Bash tool (the main conversation)."""
        with self.lock:
            return [r for r in self.requests if "Bash" in _tools(r)]

    def last_tool_results(self) -> list[str]:
        """Text of each tool_result the model received, from the latest agent request."""
        reqs = self.agent_requests()
        return [result_text(b) for b in tool_results(reqs[-1])] if reqs else []


def main(argv: list[str]) -> int:
    with FakeAnthropic(argv, lifetime_s=60) as fake:
        print(fake.base_url, flush=True)
        time.sleep(60)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
