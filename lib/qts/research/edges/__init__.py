"""The edge factory (issue #13): anomaly detectors -> triple-barrier labels -> a meta-labeling model whose
probability is the signal's confidence -> a runnable candidate (``edge_meta``) judged by the same gates
as any strategy.

- :mod:`.anomalies` robust z-scores (median / MAD over a trailing window) of returns, volume and the
  high-low range; an IsolationForest fitted walk-forward on past bars only
- :mod:`.labels`    triple-barrier labels (take profit, stop loss, time; Lopez de Prado)
- :mod:`.meta`      walk-forward, purged meta-model (logistic regression) and its out-of-sample metrics
- :mod:`.factory`   the whole run (``run_factory``) and its report

scikit-learn is imported inside the functions that fit models, never at import time.
"""

from .factory import FactoryConfig, FactoryResult, run_factory  # noqa: F401
