"""Brokers execute orders that the gate has let through: paper (simulated fills on market data) and
live (ccxt). Nothing outside :mod:`qts.engine.submit` calls a broker's ``place``."""
