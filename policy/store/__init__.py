"""The only code that talks to Redis: the policy store, the changes it announces and the feed of them.

The Redis key layout is described in `policy.store.facade`; the change messages in `policy.store.changes`.
"""

from policy.store.categories import IMPORT_BATCH, ImportResult
from policy.store.changes import (
    ApprovalsReloaded,
    ApprovalsSaved,
    CategoriesSwitched,
    Change,
    ChangeError,
    DirectoryChanged,
    ExemptionsChanged,
    GraceGranted,
    HostsAdded,
    ModesChanged,
    RulesChanged,
    ServicesChanged,
    StoreInitialised,
    StoreReset,
)
from policy.store.errors import RequestChanged, StoreError, StoreUnavailable
from policy.store.facade import PolicyStore
from policy.store.feed import ChangeFeed

__all__ = [
    "IMPORT_BATCH",
    "ApprovalsReloaded",
    "ApprovalsSaved",
    "CategoriesSwitched",
    "Change",
    "ChangeError",
    "ChangeFeed",
    "DirectoryChanged",
    "ExemptionsChanged",
    "GraceGranted",
    "HostsAdded",
    "ImportResult",
    "ModesChanged",
    "PolicyStore",
    "RequestChanged",
    "RulesChanged",
    "ServicesChanged",
    "StoreError",
    "StoreInitialised",
    "StoreReset",
    "StoreUnavailable",
]
