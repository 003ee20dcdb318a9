"""Claude Code hook adapters. Standard library only on the path every Bash call takes.

Each adapter reads the hook's JSON from stdin, decides, and answers in Claude Code's protocol:
exit 0 with JSON on stdout (a decision, or additional context), or exit 0 with nothing (no
opinion: the user's own permission settings stay in charge). Trade paths fail closed: any internal
error becomes a deny with a reason. We never answer "allow" (it would skip the user's prompts).
"""
