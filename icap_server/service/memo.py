"""The per-host decision memo: most traffic goes to hosts no list, rule or vendor names, and for those the
decision is the same whoever asks, for whatever path, at whatever time.

`judge` is a few dict look-ups, but it is still most of what an allowed request costs once the quick scan has
read it. A host whose decision came out `not-restricted` (or `protected`) with no URL rule or service path
entry anywhere on it (`PolicyState.path_free`) and no tenant restriction for it gets that same decision for
every request until the policy changes; the memo hands it back without judging again.

The memo belongs to one policy state at one version. `PolicySync` changes a state in place and then sets its
version, with no await between the two for anything a memoised decision reads (list entries, URL rules); a
resync swaps in a new state object. So a memo is dropped whenever the state object or its version is not the
one it was filled from: a host listed a moment ago is judged, never answered from the memo.
"""

from __future__ import annotations

from policy.decision import Decision, Reason
from policy.state import PolicyState

# Decisions whose value depends on the host alone (given `path_free`): no approval, exemption or clock in them.
HOST_ONLY = frozenset({Reason.NOT_RESTRICTED, Reason.PROTECTED})
MEMO_LIMIT = 65536


class DecisionMemo:
    """Host → decision for one policy state and version (see the module)."""

    __slots__ = ("_decisions", "_state", "_version")

    def __init__(self) -> None:
        self._state: PolicyState | None = None
        self._version = -1
        self._decisions: dict[str, Decision] = {}

    def get(self, state: PolicyState, host: str) -> Decision | None:
        if state is not self._state or state.version != self._version:
            self._state, self._version = state, state.version
            self._decisions = {}
            return None
        return self._decisions.get(host)

    def keep(self, state: PolicyState, host: str, decision: Decision, tenant_host: bool) -> None:
        """Remember `decision` for `host` if it depends on the host alone; `tenant_host`: a vendor's host, whose
        decision depends on who asks."""
        if decision.reason not in HOST_ONLY or tenant_host or decision.rule_id is not None:
            return
        if state is not self._state or state.version != self._version or not state.path_free(host):
            return
        decisions = self._decisions
        if len(decisions) >= MEMO_LIMIT:
            decisions.clear()
        decisions[host] = decision
