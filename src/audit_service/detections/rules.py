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
    # Settings other than integer thresholds the rule takes (PATCH): "time_zone",
    # "business_days".
    options: tuple[str, ...] = ()

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
        options=("time_zone", "business_days"),
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
RULES += (
    Rule(
        id="off_hours_learned",
        version=1,
        title="Login at an hour unusual for the user",
        severity="low",
        entity="user",
        thresholds=(
            Threshold("days", 28, 7, 56, "History: the user's logins of the last this many days"),
            Threshold("min_logins", 20, 1, 100_000, "Logins the history needs"),
            Threshold("min_days", 10, 1, 56, "Distinct local days with a login the history needs"),
            Threshold(
                "max_share_per_mille",
                10,
                1,
                1000,
                "Alert when the login's hour of the week holds less than this share of the "
                "history's logins (per mille: 10 = 1 %)",
            ),
            Threshold(
                "spread_hours",
                1,
                0,
                12,
                "The hour of the week counts its neighbours this many hours either side (0: "
                "the exact hour; 1: a login at Tue 08:xx is usual if Tue 07-09 hold 1 %)",
            ),
        ),
        guide=Guide(
            meaning="A user with an established login rhythm logged in at an hour of the week "
            "(local, AUDIT_DETECTIONS_TZ; with the hour either side, spread_hours) that holds "
            "less than 1 % of their logins of the last 28 days. Learned per user, unlike "
            "off_hours_policy's fixed business hours. One alert per user and hour.",
            false_positives="A changed shift, travel across time zones, a deadline.",
            response="Confirm with the user; look at what the session did (evidence.filter).",
        ),
    ),
    Rule(
        id="volume_spike_user",
        version=1,
        title="A user's activity far above their usual for that hour",
        severity="medium",
        entity="user",
        thresholds=(
            Threshold(
                "p_exponent",
                6,
                1,
                30,
                "Alert when the over-dispersion-corrected Poisson tail p ≤ 10^-p_exponent",
            ),
            Threshold("ratio", 3, 1, 1000, "... and the hour's events ≥ ratio x the baseline"),
            Threshold("min_events", 20, 1, 1_000_000, "... and at least this many events"),
            Threshold("min_weeks", 4, 1, 8, "Weeks of history the user needs"),
            Threshold("weeks", 8, 1, 8, "Baseline: the same hour of the week, this many weeks"),
        ),
        guide=Guide(
            meaning="In one local hour the user did far more than in the same hour of the week "
            "over the last 4 to 8 weeks (quasi-Poisson: the variance scaled by the observed "
            "dispersion), evaluated on arrival against the running hour; one alert per user "
            "and hour.",
            false_positives="A bulk task done by hand (grading, imports), a script using a "
            "person's account, the first busy day of a term.",
            response="Look at what the actions were (evidence.filter); a scraping or export "
            "spree by a stolen account looks like this.",
        ),
    ),
    Rule(
        id="volume_spike_tenant",
        version=1,
        title="A tenant's or module's volume far above its usual for that hour",
        severity="medium",
        entity="tenant",
        thresholds=(
            Threshold("k_sigma", 3, 1, 20, "Alert above EWMA + k_sigma x sigma"),
            Threshold("lambda_percent", 30, 1, 100, "EWMA weight of the newest week, percent"),
            Threshold("min_weeks", 3, 2, 8, "Weeks of history needed"),
            Threshold("weeks", 8, 2, 8, "Weeks the EWMA runs over"),
            Threshold("min_events", 50, 1, 10_000_000, "... and at least this many events"),
            Threshold(
                "min_ratio_percent",
                200,
                100,
                100_000,
                "... and at least this percentage of the EWMA (a spike, not noise: at a few "
                "dozen events an hour, 3 sigma alone is crossed by chance every few days)",
            ),
        ),
        guide=Guide(
            meaning="The events of a source and tenant (or of one module of it) in a local hour "
            "exceed the exponentially weighted moving average of the same hour of the week "
            "(λ 0.3) by more than 3 sigma (sigma from the EWMA of squared deviations, at least the "
            "Poisson √mean) and reach 200 % of it; evaluated on arrival against the running hour.",
            false_positives="A new customer or integration onboarding, a migration or replay, "
            "an exam week.",
            response="Look at which actors and actions make the volume (evidence.filter); a "
            "runaway client or an attack on one module shows here first.",
        ),
    ),
    Rule(
        id="forwarding_failing",
        version=1,
        title="Forwarding to a destination is failing",
        severity="medium",
        entity="dest",
        thresholds=(),
        guide=Guide(
            meaning="The `forwarding.failing` event: a SIEM destination has not accepted "
            "events for AUDIT_FORWARD_FAILING_AFTER or refused them permanently. Events queue "
            "(nothing is lost) but the SIEM is behind. `forwarding.recovered` resolves the "
            "alert (benign, note 'recovered').",
            false_positives="Planned maintenance of the receiver.",
            response="Check the destination (GET /admin/forwarding/destinations/{id}, "
            "last_error) and the receiver.",
        ),
    ),
)
CATALOGUE: dict[str, Rule] = {r.id: r for r in RULES}
# How far back the window state must reach: the longest window, and a local day in any zone.
RETENTION_MINUTES = 49 * 60
# The hourly baselines (detection_volume): 8 weeks and the running one.
VOLUME_RETENTION_DAYS = 63
