"""The `portal.reminders` section: when heads get their digest, and which notes people get about their access.

Sent by the portal process (so only with `portal.listen` and `smtp.host` set); `clearance reminders run` sends
the same mails once, for a cron job or a test. Times are read in `policy.timezone`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from icap_server.config.types import AtLeastOne, Seconds, Section, wrong

Clock = Annotated[str, wrong("expected a time of day as HH:MM (24-hour)", pattern=r"\A([01][0-9]|2[0-3]):[0-5][0-9]\Z")]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
Days = Annotated[int, wrong("must be 0 or more days", ge=0)]


class RemindersConfig(Section, frozen=True):
    """The heads' digest (one mail per head per period) and the notes to the person (each sent once)."""

    digest: Literal["off", "daily", "weekly"] = "daily"  # off: only `clearance reminders run` sends one
    time: Clock = "08:00"  # when the day's (or week's) digest goes, in policy.timezone
    weekday: Weekday = "monday"  # the weekly digest's day
    notes: bool = True  # notes to the person: approved, denied, about to expire, suspended
    review_due_days: Days = 7  # a review falling due within this many days is listed as due
    unused_days: AtLeastOne = 30  # in force and not used for this many days: listed as unused
    expiring_days: AtLeastOne = 14  # ending within this many days: listed in the digest as expiring
    expiry_notice_days: AtLeastOne = 7  # the person is told this many days before their access ends
    note_window_days: AtLeastOne = 3  # decisions older than this get no note (a portal down longer misses them)
    check_interval_seconds: Seconds = 60.0  # how often the portal looks for something to send
