"""What the heads' workspace says, in English and Traditional Chinese, from the one catalog.

The workspace page is in the language the browser asks for (`blockpages.negotiate.choose_language`, as the
block page chooses); its refusals are bilingual message pages like the rest of the portal's, and every one
of them says that nothing was changed.
"""

from __future__ import annotations

from blockpages.catalog import N_, translator
from blockpages.negotiate import Language

# kind -> (HTTP status, title, text); %(ttl)s is filled in (the link's lifetime in minutes).
REFUSALS: dict[str, tuple[int, str, str]] = {
    "sign-in": (
        403,
        N_("Sign in to see your decisions"),
        N_(
            "This page shows what waits for a department head. Open it through the organisation's proxy while "
            "signed in, or use the link in your e-mail."
        ),
    ),
    "not-a-head": (
        403,
        N_("Nothing to decide here"),
        N_("The directory names you as head or delegate of no department, so there is nothing for you to decide."),
    ),
    "not-yours": (
        403,
        N_("Not your department"),
        N_("Only a head or delegate of its department may decide this. Nothing was changed."),
    ),
    "form": (
        403,
        N_("This form is not valid any more"),
        N_(
            "The form was not sent from your own page, or it is too old. Nothing was changed. Open the page "
            "again and repeat what you meant to do."
        ),
    ),
    "cross-site": (
        403,
        N_("Sent from another site"),
        N_("The form was sent from another site, so it was not accepted. Nothing was changed."),
    ),
    "link-bad": (
        400,
        N_("This link is not valid"),
        N_("The link was altered, damaged or made by another server. Nothing was changed."),
    ),
    "link-expired": (
        410,
        N_("This link has expired"),
        N_(
            "A link in the e-mail works for %(ttl)s minutes. Nothing was changed. Open your page through the "
            "proxy to decide."
        ),
    ),
    "link-used": (
        409,
        N_("This link was used already"),
        N_("Each link in the e-mail works once. Nothing was changed. Open your page through the proxy to decide."),
    ),
    "not-allowed": (
        403,
        N_("The link does not allow this"),
        N_("This link was made for other actions or another item. Nothing was changed."),
    ),
    "refused": (409, N_("Not done"), N_("The rules do not allow this, so nothing was changed.")),
    "not-found": (404, N_("Not found"), N_("There is no such request or approval. Nothing was changed.")),
    "bad-form": (400, N_("The form could not be read"), N_("Nothing was changed. Send the form again.")),
}

DONE = (N_("Done"), N_("Saved, and every filter applies it within a second."))

# The workspace page's words (keys are what the template uses).
LABELS: dict[str, str] = {
    "title": N_("Decisions for your departments"),
    "signed_in": N_("Signed in as"),
    "departments": N_("Departments"),
    "pending": N_("Pending requests"),
    "reviews": N_("Reviews due"),
    "expiring": N_("Expiring soon"),
    "active": N_("Other current approvals"),
    "nothing": N_("Nothing is waiting."),
    "requester": N_("Requester"),
    "service": N_("Service"),
    "site": N_("Site"),
    "days_asked": N_("Days asked"),
    "justification": N_("Justification"),
    "submitted": N_("Submitted"),
    "approval": N_("Approval"),
    "subject": N_("Subject"),
    "scope": N_("Scope"),
    "valid_until": N_("Valid until"),
    "review_due": N_("Review due"),
    "uses": N_("Uses"),
    "last_used": N_("Last used"),
    "never": N_("never"),
    "approve": N_("Approve"),
    "deny": N_("Deny"),
    "keep": N_("Keep"),
    "revoke": N_("Revoke"),
    "suspend": N_("Suspend"),
    "days": N_("Days"),
    "note": N_("Note"),
    "reason": N_("Reason"),
    "own": N_("Your own request: another approver must decide it."),
    "back": N_("Back to your page"),
}


def labels(language: Language) -> dict[str, str]:
    """The workspace's words in one language."""
    translate = translator(language)
    return {key: translate(message) for key, message in LABELS.items()}
