"""Test equipment shared by the tests and the benchmarks (not part of the installed library).

Import as ``from support.loopback_exchange import LoopbackBinance`` with ``tests/`` on ``sys.path``
(pytest puts it there; ``tests/live_support.py`` and ``bench/`` add it).
"""
