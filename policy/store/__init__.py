"""The only code that talks to Redis: the policy store facade and the changes it announces."""

from policy.store.facade import (
    IMPORT_BATCH,
    Change,
    ImportResult,
    PolicyStore,
    RequestChanged,
    StoreError,
    StoreUnavailable,
)

__all__ = ["IMPORT_BATCH", "Change", "ImportResult", "PolicyStore", "RequestChanged", "StoreError", "StoreUnavailable"]
