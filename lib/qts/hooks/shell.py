"""Split a shell command into segments of words, once, in linear time. Standard library only.

This is not a shell: it reads enough of bash's quoting to see the words a command will run with
(`'q'ts`, `q\\ts` and `"qts"` are all `qts`; a `#` that starts a word begins a comment), where one
command ends and the next begins (`;`, `&&`, `||`, `|`, `&`, newlines, parentheses, `$(`, backticks),
and where output is redirected. Each token is matched by an anchored pattern whose parts cannot
overlap, so the work is proportional to the length of the text whatever it holds. Anything it cannot
follow (nesting too deep, too many segments) raises TooComplex: the caller refuses rather than guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_SEGMENTS = 5_000
MAX_WORDS = 50_000
MAX_DEPTH = 4          # `bash -c "... $(...)"` inside `eval` ...: deeper than this is refused

# one token per match, each alternative anchored at the current position and linear
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<cont>\\\n)
  | (?P<nl>\n)
  | (?P<sq>'[^']*'?)
  | (?P<ansi>\$'(?:[^'\\]|\\.)*'?)
  | (?P<dq>"(?:[^"\\]|\\.|\\\Z)*"?)
  | (?P<esc>\\.?)
  | (?P<subst>\$\(|`|<\(|>\()
  | (?P<redir>\d*(?:&>>|&>|>>|>\||>&|<<<|<<-|<<|<&|<>|>|<))
  | (?P<op>&&|\|\||;;|\|&|[;&|()])
  | (?P<plain>[^\s'"\\`$;&|()<>]+|\$)
""", re.X | re.S)

_WRITE_REDIRS = (">", ">>", ">|", "&>", "&>>", "<>", ">&")


class TooComplex(ValueError):
    pass


@dataclass
class Segment:
    words: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)   # (operator, target)
    heredocs: list[str] = field(default_factory=list)                 # bodies: data, not commands
    depth: int = 0

    @property
    def write_targets(self) -> list[str]:
        return [t for op, t in self.redirects if op.lstrip("0123456789") in _WRITE_REDIRS]


def _unquote_dq(tok: str) -> str:
    body = tok[1:-1] if len(tok) >= 2 and tok.endswith('"') else tok[1:]
    return re.sub(r'\\([\\"$`\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), body)


def _unquote_ansi(tok: str) -> str:
    body = tok[2:-1] if len(tok) >= 3 and tok.endswith("'") else tok[2:]
    return re.sub(r"\\(.)", r"\1", body)


def split(cmd: str, depth: int = 0) -> list[Segment]:
    """The segments of ``cmd``; the text of `$(...)`/backtick substitutions becomes segments too."""
    if depth > MAX_DEPTH:
        raise TooComplex(f"commands nested more than {MAX_DEPTH} levels deep")
    segs: list[Segment] = []
    cur = Segment(depth=depth)
    word: list[str] = []
    in_word = False
    pending_redir: str | None = None
    pending_heredocs: list[tuple[str, bool]] = []    # (delimiter, strip tabs)
    nested: list[str] = []                            # double-quoted texts holding $( or `: lexed after
    n_words = 0
    pos, end = 0, len(cmd)

    def finish_word():
        nonlocal word, in_word, pending_redir, n_words
        if not in_word:
            return
        w = "".join(word)
        word, in_word = [], False
        n_words += 1
        if n_words > MAX_WORDS:
            raise TooComplex(f"more than {MAX_WORDS} words")
        if pending_redir is not None:
            op = pending_redir
            pending_redir = None
            if op.lstrip("0123456789") in ("<<", "<<-"):
                pending_heredocs.append((w, op.endswith("-")))
            else:
                cur.redirects.append((op, w))
        else:
            cur.words.append(w)

    def finish_segment():
        nonlocal cur
        finish_word()
        if cur.words or cur.redirects or cur.heredocs:
            segs.append(cur)
            if len(segs) > MAX_SEGMENTS:
                raise TooComplex(f"more than {MAX_SEGMENTS} commands")
        cur = Segment(depth=depth)

    while pos < end:
        m = _TOKEN.match(cmd, pos)
        if m is None:  # cannot happen (every character starts some token); refuse rather than loop
            raise TooComplex(f"unreadable character at {pos}")
        kind, tok = m.lastgroup, m.group()
        pos = m.end()
        if kind == "ws" or kind == "cont":
            finish_word()
        elif kind == "nl":
            finish_segment()
            if pending_heredocs:  # the bodies start on the next line
                for delim, strip in pending_heredocs:
                    body, pos = _read_heredoc(cmd, pos, delim, strip)
                    (segs[-1] if segs else cur).heredocs.append(body)
                pending_heredocs = []
        elif kind == "plain":
            if tok.startswith("#") and not in_word:   # a comment runs to the end of the line
                nl = cmd.find("\n", pos)
                pos = end if nl < 0 else nl
                continue
            word.append(tok)
            in_word = True
        elif kind == "sq":
            word.append(tok[1:-1] if len(tok) >= 2 and tok.endswith("'") else tok[1:])
            in_word = True
        elif kind == "ansi":
            word.append(_unquote_ansi(tok))
            in_word = True
        elif kind == "dq":
            text = _unquote_dq(tok)
            if "$(" in text or "`" in text:
                nested.append(text)
            word.append(text)
            in_word = True
        elif kind == "esc":
            word.append(tok[1:])
            in_word = True
        elif kind == "redir":
            finish_word()
            pending_redir = tok
        elif kind == "subst" or kind == "op":
            finish_segment()
    finish_segment()
    for delim, _ in pending_heredocs:  # a here-document without its body line: nothing more to read
        pass
    for text in nested:
        segs.extend(split(text, depth + 1))
    return segs


def _read_heredoc(cmd: str, pos: int, delim: str, strip_tabs: bool) -> tuple[str, int]:
    """The body of a here-document starting at ``pos`` and the position after its closing line."""
    start = pos
    while pos < len(cmd):
        nl = cmd.find("\n", pos)
        line_end = len(cmd) if nl < 0 else nl
        line = cmd[pos:line_end]
        if (line.lstrip("\t") if strip_tabs else line) == delim:
            return cmd[start:pos], (line_end + 1 if nl >= 0 else line_end)
        pos = line_end + 1
    return cmd[start:], len(cmd)


ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# commands that run the rest of their arguments as a command
WRAPPERS = {"sudo", "doas", "env", "nohup", "time", "nice", "ionice", "timeout", "stdbuf", "setsid", "exec",
            "command", "builtin", "xargs", "chrt", "taskset", "unbuffer", "caffeinate", "flock", "then", "do",
            "else", "elif", "if", "while", "until", "!", "{"}


def basename(word: str) -> str:
    return word.rstrip("/").rsplit("/", 1)[-1]


def command_index(words: list[str]) -> int:
    """Index of the word that names the program a segment runs (after assignments and wrappers), or -1."""
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        b = basename(w)
        if ASSIGNMENT.match(w):
            i += 1
        elif b in WRAPPERS:
            i += 1
            if b == "timeout":         # timeout [opts] DURATION cmd
                while i < n and words[i].startswith("-"):
                    i += 1
                i += 1
            elif b == "flock":         # flock [opts] FILE cmd
                while i < n and words[i].startswith("-"):
                    i += 1
                i += 1
            else:
                while i < n and words[i].startswith("-") and len(words[i]) > 1:
                    i += 1
        else:
            return i
    return -1
