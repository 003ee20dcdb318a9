"""The trading agent: the one process that holds the exchange keys and places live orders."""
