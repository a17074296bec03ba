"""The block pages' words: one plain-language message per reason, the advice, the caution page's heading and
message, and the "Mode" labels. Message ids for the one bilingual catalog (`catalog.py`, `locale/`): the English
text is the id, and `N_` only marks it for extraction.
"""

from __future__ import annotations

from .catalog import N_

REQUESTABLE = frozenset({"no-approval", "approval-expired", "approval-revoked", "approval-suspended"})

HEADING = N_("Access to this site is blocked")
CAUTION_HEADING = N_("This service needs approval")
# The caution page's message: the rule, and that this use is recorded. %(category)s as in REASON_MESSAGES.
CAUTION_MESSAGE = N_(
    "Staff may use %(category)s only with their head of department's prior approval, for a genuine business "
    "need. You may continue for now, but this use is recorded and your department sees it."
)
# The "Mode" fact: which mode decided the page (a caution page, or a block).
MODE_LABELS: dict[str, str] = {"enforce": N_("Enforced"), "caution": N_("Caution")}

# What happened, one distinct plain-language message per reason. %(category)s is the category's label.
REASON_MESSAGES: dict[str, str] = {
    "no-approval": N_(
        "You have no approval to use %(category)s. Such services are open only to staff whose head of "
        "department has approved them for a genuine business need."
    ),
    "approval-expired": N_(
        "Your approval to use %(category)s has expired. If you still need it, ask for a new approval."
    ),
    "approval-revoked": N_(
        "Your approval to use %(category)s has been revoked, so access has stopped. Ask the head of your "
        "department if you think this is a mistake."
    ),
    "approval-suspended": N_(
        "Your approval to use %(category)s is on hold because its regular review is overdue. It works again "
        "as soon as the head of your department has reviewed it."
    ),
    "not-permitted": N_(
        "The use of %(category)s is not permitted on this network at all, and no approval can open it."
    ),
    "policy-unavailable": N_(
        "The web filter cannot check approvals at the moment, so it blocks every site until it can. This is "
        "not about you or this site: please try again in a few minutes."
    ),
    "bad-request": N_(
        "The web filter cannot tell which site this request is for: the address names no site, or two "
        "different ones. Such requests are blocked for everyone, whatever approvals they hold."
    ),
}
UNKNOWN_REASON = N_("The web filter blocked this request.")

# What to do about it, for the reasons where the organisation's own how-to-request text does not fit.
ADVICE: dict[str, str] = {
    "approval-suspended": N_("Ask the head of your department to review your approval."),
    "not-permitted": N_(
        "If your work really depends on it, speak to the IT security team and quote the reference on this page."
    ),
    "policy-unavailable": N_("If this lasts more than a few minutes, contact us and quote the reference on this page."),
    "bad-request": N_(
        "Check the address and try again, typed as the site gives it. If a program you need sends such "
        "requests, contact us and quote the reference on this page."
    ),
}
# With the request form on the page, the advice points to it (without one, the organisation's how-to-request text
# or the reason's advice above); approval-suspended keeps its own first sentence.
ADVICE_WITH_FORM = N_("Tell the head of your department why your work needs it, with the form below.")
SUSPENDED_WITH_FORM = N_(
    "Ask the head of your department to review your approval, or ask for a new one with the form below."
)
# Reasons that are about no category (the page shows no category's name in them).
UNCATEGORISED = frozenset({"policy-unavailable", "bad-request"})
# A catalogue service named in a reason's sentence, with its category beside it: "WhatsApp (web instant messaging)".
SERVICE_IN_SENTENCE = N_("%(service)s (%(category)s)")
