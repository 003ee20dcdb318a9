"""Where an exchange secret is visible to the assistant. Standard library only, bounded work.

The assistant's Bash commands inherit the user's environment (DESIGN.md: "a secret in an environment
variable is visible to the assistant"), and can read any ``.env`` the user can. Keys belong in the agent's
encrypted key store instead (``qts agent import-keys``, typed by the human in their own terminal).

`visible_secrets` says WHERE (variable names, file paths), never a value. It looks at the process
environment and at exactly two files: ``<project>/.env`` and ``<state home>/.env`` (no walking the
project), each read up to 256 KB, never blocking on a FIFO or a device planted under that name.
"""

from __future__ import annotations

import os
import re
import stat

ENV_FILE_LIMIT = 256 * 1024

# Always exchange credentials (the names qts reads, and ccxt's `password` credential under the same prefix).
EXCHANGE_NAMES = frozenset({"EXCHANGE_API_KEY", "EXCHANGE_SECRET", "EXCHANGE_PASSWORD", "EXCHANGE_PASSPHRASE"})
# Names that look like an exchange credential: *_API_KEY, *_APIKEY, *_SECRET, *_API_SECRET, *_SECRET_KEY,
# *_PRIVATE_KEY (ccxt's wallet-signed exchanges), and anything with PASSPHRASE (ccxt's third credential on
# Coinbase, KuCoin, OKX, Bitget...).
LOOKS_LIKE = re.compile(r"^(?:[A-Z0-9_]*_)?(?:API_?KEY|SECRET|API_SECRET|SECRET_KEY|PRIVATE_KEY)$|PASSPHRASE",
                        re.I)
# Deliberately NOT reported, although they match the shapes above: credentials of services that are not
# exchanges and that a developer's shell (or this plugin's research pipeline) legitimately holds. Warning
# about them on every session would be noise that teaches people to ignore the warning:
#   model providers (ANTHROPIC_API_KEY is Claude Code's own key; OPENAI_, GEMINI_, ... are used by the DSPy
#   research pipeline), cloud and code hosting (AWS_, GOOGLE_, AZURE_, GITHUB_, GH_, GITLAB_, NPM_, PYPI_,
#   TWINE_), observability (SENTRY_, DATADOG_, DD_, LANGCHAIN_, LANGSMITH_, WANDB_), and notification
#   channels this plugin may use (TELEGRAM_, SLACK_, DISCORD_, SMTP_).
UNRELATED_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "AZURE_OPENAI_", "AZURE_", "GEMINI_", "GOOGLE_", "VERTEX_",
                      "GROQ_", "MISTRAL_", "COHERE_", "DEEPSEEK_", "OPENROUTER_", "TOGETHER_", "FIREWORKS_", "XAI_",
                      "PERPLEXITY_", "VOYAGE_", "REPLICATE_", "HF_", "HUGGINGFACE_", "HUGGING_FACE_", "OLLAMA_",
                      "LITELLM_", "AWS_", "GITHUB_", "GH_", "GITLAB_", "NPM_", "PYPI_", "TWINE_", "SENTRY_",
                      "DATADOG_", "DD_", "LANGCHAIN_", "LANGSMITH_", "LANGFUSE_", "WANDB_", "TELEGRAM_", "SLACK_",
                      "DISCORD_", "SMTP_")

_KEY_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")  # FOO=${FOO}: names a variable, holds no secret


def is_exchange_secret_name(name: str) -> bool:
    n = name.upper()
    if n in EXCHANGE_NAMES:
        return True
    if n.startswith(UNRELATED_PREFIXES):
        return False
    return bool(LOOKS_LIKE.search(n))


def read_regular_file(path: os.PathLike | str, limit: int, truncate: bool = True) -> bytes:
    """Up to ``limit`` bytes of a regular file. Never blocks: a FIFO, socket or device planted under the
    name is refused (ValueError), as is a longer file when ``truncate`` is false. OSError when unreadable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if not truncate and st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        chunks, n = [], 0
        while n <= limit:
            b = os.read(fd, min(65536, limit + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        data = b"".join(chunks)
        if len(data) > limit:
            if not truncate:
                raise ValueError(f"larger than {limit} bytes")
            data = data[:limit]
        return data
    finally:
        os.close(fd)


def read_env_file(path: os.PathLike | str, limit: int = ENV_FILE_LIMIT) -> dict[str, str]:
    """KEY=VALUE lines of a ``.env`` (first ``limit`` bytes), tolerant: bad lines are skipped; {} when
    the file is missing or unreadable. Optional ``export``, quotes and ``#`` comments as in qts.config."""
    try:
        text = read_regular_file(path, limit).decode("utf-8", "replace")
    except (OSError, ValueError):
        return {}
    out: dict[str, str] = {}
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        m = _KEY_LINE.match(raw)
        if not m:
            continue
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[m.group(1)] = value
    return out


def _holds_value(value) -> bool:
    v = str(value or "").strip()
    return bool(v) and not _REFERENCE.match(v)


def visible_secrets(env, project_dir, home_root) -> list[str]:
    """Where an exchange secret is visible to the assistant: ``environment variable NAME`` and
    ``/path/.env: NAME, NAME``. Names and paths only, never a value. Never raises."""
    found: list[str] = []
    try:
        env = os.environ if env is None else env
        names = sorted(k for k, v in env.items() if is_exchange_secret_name(k) and _holds_value(v))
        found += [f"environment variable {k}" for k in names]
    except Exception:  # noqa: BLE001 - a report, not a gate
        pass
    seen = set()
    for folder in (project_dir, home_root):
        if not folder:
            continue
        try:
            path = os.path.abspath(os.path.join(os.fspath(folder), ".env"))
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            hits = sorted(k for k, v in read_env_file(path).items() if is_exchange_secret_name(k) and _holds_value(v))
            if hits:
                found.append(f"{path}: " + ", ".join(hits))
        except Exception:  # noqa: BLE001
            continue
    return found
