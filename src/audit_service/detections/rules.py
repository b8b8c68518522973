"""The versioned rule catalogue: what each rule looks for, its defaults and their bounds
(PATCH /admin/detections/rules/{id} is validated against them), and a guide for whoever
gets the alert. A rule whose logic or meaning changes gets a new version; alerts record the
version that opened them."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    default: int
    minimum: int
    maximum: int
    description: str


@dataclass(frozen=True, slots=True)
class Guide:
    meaning: str
    false_positives: str
    response: str


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    version: int
    title: str
    severity: str
    entity: str  # ip / user / ip_user
    thresholds: tuple[Threshold, ...]
    guide: Guide

    def defaults(self) -> dict[str, int]:
        return {t.name: t.default for t in self.thresholds}

    def threshold(self, name: str) -> Threshold:
        return next(t for t in self.thresholds if t.name == name)


def _window(default: int) -> Threshold:
    return Threshold(
        "window_minutes", default, 1, 1440, "Sliding window on arrival (recorded_at), minutes"
    )


RULES: tuple[Rule, ...] = (
    Rule(
        id="failed_logins_per_ip_daily",
        version=1,
        title="Many failed logins from one IP address in a day",
        severity="low",
        entity="ip",
        thresholds=(
            Threshold(
                "max_failures",
                5,
                1,
                100_000,
                "Alert when one IP's failed logins in a local day exceed this",
            ),
        ),
        guide=Guide(
            meaning="More failed logins from one address in one day (AUDIT_DETECTIONS_TZ) than "
            "the daily allowance: someone guessing, or a client with a stale password.",
            false_positives="A shared NAT or proxy in front of many users; a script or "
            "integration retrying with an old credential.",
            response="Look at the users tried (evidence.top_users). One user: ask them; many: "
            "block the address and check for a success from it.",
        ),
    ),
    Rule(
        id="brute_force_ip",
        version=1,
        title="Brute force from one IP address",
        severity="medium",
        entity="ip",
        thresholds=(
            Threshold("failures", 10, 2, 100_000, "Failed logins from one IP in the window"),
            _window(10),
        ),
        guide=Guide(
            meaning="A burst of failed logins from one address: automated password guessing.",
            false_positives="A misconfigured client in a retry loop; a load test.",
            response="Block or rate-limit the address; check for a later success from it "
            "(success_after_failures mutes this alert when one follows).",
        ),
    ),
    Rule(
        id="account_guessing",
        version=1,
        title="Password guessing against one account",
        severity="medium",
        entity="ip_user",
        thresholds=(
            Threshold(
                "failures", 10, 2, 100_000, "Failed logins for one user from one IP in the window"
            ),
            _window(10),
        ),
        guide=Guide(
            meaning="Repeated failed logins for one user from one address.",
            false_positives="The user forgot their password; a device with a stale one.",
            response="Confirm with the user; lock or reset the account if it was not them.",
        ),
    ),
    Rule(
        id="success_after_failures",
        version=1,
        title="Successful login after repeated failures",
        severity="high",
        entity="user",
        thresholds=(
            Threshold(
                "failures",
                5,
                1,
                100_000,
                "Failed logins (same user, or same IP) in the window before the success",
            ),
            _window(10),
        ),
        guide=Guide(
            meaning="A login succeeded right after a run of failures for the same user or from "
            "the same address: a guessed password, possibly.",
            false_positives="A user who typed their password wrong a few times, then right.",
            response="Ask the user whether it was them; if not, revoke their sessions, reset "
            "the password and review what the account did after the login.",
        ),
    ),
    Rule(
        id="password_spray",
        version=1,
        title="Password spraying from one IP address",
        severity="high",
        entity="ip",
        thresholds=(
            Threshold("users", 5, 2, 100_000, "Distinct users tried from the IP"),
            Threshold("tries", 15, 2, 1_000_000, "Failed logins from the IP"),
            Threshold("max_per_user", 6, 1, 100_000, "At most this many tries per user"),
            _window(60),
        ),
        guide=Guide(
            meaning="Few tries each against many users from one address: one common password "
            "tried across accounts, staying under per-account lockouts.",
            false_positives="A shared kiosk or NAT after a password policy change.",
            response="Block the address; force a reset for any user who logged in from it.",
        ),
    ),
    Rule(
        id="distributed_brute_force",
        version=1,
        title="Distributed brute force against one account",
        severity="medium",
        entity="user",
        thresholds=(
            Threshold("ips", 5, 2, 100_000, "Distinct IPs failing for the user"),
            Threshold("failures", 10, 2, 100_000, "Failed logins for the user"),
            _window(30),
        ),
        guide=Guide(
            meaning="Failed logins for one user from many addresses: a botnet guessing one "
            "account's password around per-IP limits.",
            false_positives="A user with many devices on mobile networks and a changed password.",
            response="Protect the account (lock it, require a reset or a second factor).",
        ),
    ),
    Rule(
        id="off_hours_policy",
        version=1,
        title="Login or privileged action outside business hours",
        severity="low",
        entity="user",
        thresholds=(
            Threshold("start_hour", 7, 0, 23, "Business hours start (local hour, inclusive)"),
            Threshold("end_hour", 20, 1, 24, "Business hours end (local hour, exclusive)"),
            Threshold("weekends_off", 1, 0, 1, "1: Saturday and Sunday are outside hours"),
        ),
        guide=Guide(
            meaning="A user logged in, or did something privileged (as an admin, on users or "
            "API keys, a configuration change, an export), outside the business hours in "
            "AUDIT_DETECTIONS_TZ, by arrival time. One alert per user and local day.",
            false_positives="On-call work, travel across time zones, a scheduled task running "
            "as a person's account.",
            response="Check with the user or their manager; look at what else the account did "
            "in that session (evidence.filter).",
        ),
    ),
    Rule(
        id="new_network",
        version=1,
        title="Login from a new network",
        severity="low",
        entity="user",
        thresholds=(
            Threshold("days", 14, 1, 365, "A network not seen for this many days is new"),
            Threshold("min_logins", 10, 1, 100_000, "Earlier logins the user needs first"),
        ),
        guide=Guide(
            meaning="A user with an established history logged in from a /24 (IPv4) or /48 "
            "(IPv6) network they have not used in `days` days.",
            false_positives="Travel, a new ISP or mobile network, a VPN exit that changed.",
            response="Confirm with the user; if it was not them, revoke their sessions and "
            "reset the password.",
        ),
    ),
    Rule(
        id="first_privileged_action",
        version=1,
        title="Privileged action after a long pause, or once denied and now allowed",
        severity="medium",
        entity="user",
        thresholds=(
            Threshold(
                "days",
                30,
                1,
                365,
                "No privileged action for this long before (or a denial "
                "of the same action within it)",
            ),
        ),
        guide=Guide(
            meaning="A user did something privileged (as admin, on users or API keys, a "
            "configuration change, an export) for the first time in `days` days; or an action "
            "denied to them earlier succeeded: their rights changed in between. A user's very "
            "first privileged action (no history yet) does not alert.",
            false_positives="A role granted on purpose; an admin back from leave.",
            response="Check who changed the user's role or permissions (user.updated events) "
            "and whether it was approved.",
        ),
    ),
)
CATALOGUE: dict[str, Rule] = {r.id: r for r in RULES}
# How far back the window state must reach: the longest window, and a local day in any zone.
RETENTION_MINUTES = 49 * 60
