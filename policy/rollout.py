"""The roll-out mode applied to a decision: a pure step after `judge` (and the tenant restriction).

Only a block an approval could lift is touched (`policy.modes.SOFTENED`); everything else, passes included,
comes back as it was. `monitor` passes it as `would-block`; `caution` answers with the interstitial page, or
passes it as `continued` when this person has a grace for this service from this address. The reason,
category and service stay those of the block, so the log, the discovery counts and the page say what the
block would have been.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from .decision import Action, Decision, RequestFacts
from .modes import SOFTENED, Mode, ModeTable, grace_target
from .state import PolicyState

_ACTIONS = {Mode.ENFORCE: Action.BLOCK, Mode.MONITOR: Action.WOULD_BLOCK, Mode.CAUTION: Action.CAUTION}


def apply_mode(
    decision: Decision, facts: RequestFacts, state: PolicyState, configured: ModeTable, now: datetime
) -> Decision:
    """The decision under the mode that applies to this person and request: the store's settings
    (`state.modes`) over the config file's (`configured`), see `policy.modes`."""
    if decision.action is not Action.BLOCK or decision.reason not in SOFTENED:
        return decision
    choice = state.modes.choose(state.department_of(facts.user), decision.service, decision.category, configured)
    action = _ACTIONS[choice.mode]
    if action is Action.CAUTION and facts.host:
        target = grace_target(decision.service, facts.host)
        if state.graces.find(facts.user, facts.client_ip, target, now.timestamp()) is not None:
            action = Action.CONTINUED
    return replace(decision, action=action, mode=str(choice.mode), mode_by=choice.source)
