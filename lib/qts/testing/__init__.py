"""Test and benchmark helpers (loopback exchanges). Standard library only at import time."""
