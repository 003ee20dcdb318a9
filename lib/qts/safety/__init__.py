"""The safety kernel: kill switch, circuit breaker, risk layers, PIN approvals."""
