"""Read-only views of the state store: session summaries, status, performance."""
