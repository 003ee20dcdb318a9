"""The strategy registry: research -> backtested -> paper -> live-ramp (10/25/50/100%) -> live -> retired.

- :mod:`.models`    the file's schema (pydantic): entries, expected metrics, validation, history
- :mod:`.core`      :class:`Registry`: fail-safe load, hash-chained atomic changes, legal transitions
- :mod:`.lifecycle` paper validation, the ramp, promotions with the PIN, demotion, capital_fraction

File: ``<state home>/registry/strategies.json``. Expiry: a validation is good for 7 days; after that
every promotion is refused until the entry is re-validated.
"""

from .core import (Registry, RegistryCorrupt, RegistryError, authorization_payload, entry_id,  # noqa: F401
                   registry_path, verify_authorization)
from .lifecycle import (Assessment, PromotionError, Realized, Tolerance, capital_fraction, drift_reason,  # noqa: F401
                        paper_assessment, promote, promotion_check, ramp_assessment, realized, retire, supervise)
from .models import (ACTIVE_STAGES, DEFAULT_TTL_DAYS, LEGAL, LIVE_STAGES, RAMP_MIN_DAYS, RAMP_STEPS,  # noqa: F401
                     STAGES, DataInfo, Entry, Expected, Provenance, ValidationSummary)
