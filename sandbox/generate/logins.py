"""LoginHistory: how often and through which channel each user signs in.

Channels, as they show in LoginHistory (what a product must read to tell them apart):
- browser: LoginType 'Application', Application 'Browser', a desktop Browser and Platform;
- mobile, as the world records it (`World.mobile_logins`):
  - salesforce_app (the default world): LoginType 'Remote Access 2.0', Application 'Salesforce for iOS'
    / 'Salesforce for Android', Platform 'iOS' / 'Android', no ApiType;
  - generic_app: LoginType 'Remote Access 2.0', Application 'Salesforce Mobile' or 'Salesforce1' (older
    app names), Platform 'iOS' / 'Android', no ApiType;
  - platform_only: LoginType 'Remote Access 2.0', Application 'N/A', only the Platform ('iOS/iPhone',
    'iOS/iPad', 'Android 14', 'Android 13') says it was a phone, no ApiType;
- API, at any hour (jobs run at night and on weekends), as the world records it
  (`World.integration_logins`):
  - api_type (the default world): LoginType 'Remote Access 2.0' (OAuth apps) or 'Other Apex API',
    ApiType set ('SOAP Partner', 'REST', ...) with an ApiVersion, Application one of API_APPLICATIONS;
  - connected_app: an OAuth connected-app login, LoginType 'Remote Access 2.0', 'Other Apex API' or
    'Partner Product', no ApiType nor ApiVersion, Application a connected app (CONNECTED_APPS: neither
    a browser nor a Salesforce mobile app), Platform 'Unknown';
  - mixed: per user, half the users' API logins as api_type, the others' as connected_app.
Most logins succeed; a few fail ('Invalid Password'). Generated and written in chunks of users. The
conventions re-record rows drawn the same way in every world, from streams of their own
("login-conventions"), so a world differing only in how it records logins has the same logins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sandbox.generate import vocabulary as V
from sandbox.generate.people import Population
from sandbox.generate.randomness import RandomStreams
from sandbox.generate.timing import Window, uniform_times, working_times
from sandbox.generate.writing import NO_TIME, DateTimes, TableWriter, pick, text_join, user_chunks
from sandbox.store import OrgStore

if TYPE_CHECKING:
    from sandbox.generate.worlds import World

LOGIN_CHUNK_ROWS = 300_000
FAILURE_SHARE = {"browser": 0.03, "mobile": 0.015, "api": 0.01}
SANDBOX_LOGIN_URL = "acme--sbx1.sandbox.my.salesforce.com"


def write_logins(store: OrgStore, streams: RandomStreams, people: Population, window: Window,
                 world: World) -> np.ndarray:
    """Writes LoginHistory for all users, recorded as the world records logins; returns each user's last
    successful login (NO_TIME if none)."""
    rng = streams.stream("login-counts")
    counts = {channel: people.draw_counts(rng, f"logins_{channel}") for channel in ("browser", "mobile", "api")}
    last_login = np.full(people.size, NO_TIME, dtype=np.int64)
    # In a 'mixed' world, whose API logins come through a connected app without an API type.
    connected_users = streams.stream("login-convention-users").random(people.size) < 0.5
    with TableWriter(store, "LoginHistory") as writer:
        for part, (first, last) in enumerate(user_chunks(sum(counts.values()), LOGIN_CHUNK_ROWS)):
            chunk_rng = streams.stream("logins", part)
            convention_rng = streams.stream("login-conventions", part)
            users = np.arange(first, last)
            for channel, channel_counts in counts.items():
                actors = np.repeat(users, channel_counts[first:last])
                columns, succeeded = _login_rows(chunk_rng, writer, people, channel, actors)
                if channel == "mobile":
                    columns |= _mobile_as_recorded(convention_rng, columns, world.mobile_logins)
                elif channel == "api":
                    connected = _connected_app_logins(world.integration_logins, connected_users[actors])
                    columns |= _api_as_recorded(convention_rng, columns, connected)
                writer.write(columns)
                np.maximum.at(last_login, actors[succeeded], columns["LoginTime"].ms[succeeded])
    return last_login


def _login_rows(rng: np.random.Generator, writer: TableWriter, people: Population, channel: str,
                actors: np.ndarray) -> tuple[dict, np.ndarray]:
    n = len(actors)
    start, end, tz = people.start_ms[actors], people.end_ms[actors], people.tz_hours[actors]
    if channel == "api":
        at = np.where(rng.random(n) < 0.6, uniform_times(rng, start, end), working_times(rng, start, end, tz))
    elif channel == "mobile":
        at = working_times(rng, start, end, tz, weekend_share=0.2, after_hours_share=0.25, early_bias=True)
    else:
        at = working_times(rng, start, end, tz, early_bias=True)
    failed = rng.random(n) < FAILURE_SHARE[channel]
    status = np.where(failed, pick(rng, V.LOGIN_FAILURES, n), "Success").astype(object)
    tls13 = rng.random(n) < 0.8
    columns = {
        "Id": writer.new_ids(n), "UserId": people.ids[actors], "LoginTime": DateTimes(at),
        "SourceIp": _source_ips(rng, actors, channel), "Status": status,
        "CountryIso": np.array([z[2] for z in V.USER_ZONES], dtype=object)[people.zone[actors]],
        "TlsProtocol": np.where(tls13, "TLS 1.3", "TLS 1.2").astype(object),
        "CipherSuite": np.where(tls13, "TLS_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384").astype(object),
        "AuthenticationServiceId": None, "NetworkId": None,
    }
    if channel == "browser":
        columns |= {"LoginType": "Application", "LoginUrl": SANDBOX_LOGIN_URL, "Application": "Browser",
                    "Browser": pick(rng, V.BROWSERS, n), "Platform": pick(rng, V.DESKTOP_PLATFORMS, n),
                    "ApiType": None, "ApiVersion": None}
    elif channel == "mobile":
        ios = rng.random(n) < 0.6
        columns |= {"LoginType": "Remote Access 2.0", "LoginUrl": "test.salesforce.com",
                    "Application": np.where(ios, "Salesforce for iOS", "Salesforce for Android").astype(object),
                    "Browser": "Unknown", "Platform": np.where(ios, "iOS", "Android").astype(object),
                    "ApiType": None, "ApiVersion": None}
    else:
        columns |= {"LoginType": pick(rng, ("Remote Access 2.0", "Other Apex API"), n, (0.75, 0.25)),
                    "LoginUrl": SANDBOX_LOGIN_URL, "Application": pick(rng, V.API_APPLICATIONS, n),
                    "Browser": "Unknown", "Platform": "Unknown", "ApiType": pick(rng, V.API_TYPES, n),
                    "ApiVersion": pick(rng, ("59.0", "60.0", "61.0"), n)}
    return columns, ~failed


def _mobile_as_recorded(rng: np.random.Generator, columns: dict, convention: str) -> dict:
    """The mobile columns that differ from the default world's under `convention` (none for salesforce_app)."""
    if convention == "salesforce_app":
        return {}
    ios = columns["Platform"] == "iOS"
    n = len(ios)
    if convention == "generic_app":
        return {"Application": pick(rng, V.GENERIC_MOBILE_APPLICATIONS, n)}
    return {"Application": "N/A", "Platform": np.where(ios, pick(rng, V.IOS_PLATFORMS, n),
                                                       pick(rng, V.ANDROID_PLATFORMS, n)).astype(object)}


def _connected_app_logins(convention: str, connected_user: np.ndarray) -> np.ndarray:
    """Which API login rows are recorded as connected-app logins (no API type) under `convention`."""
    if convention == "api_type":
        return np.zeros(len(connected_user), dtype=bool)
    if convention == "connected_app":
        return np.ones(len(connected_user), dtype=bool)
    return connected_user


def _api_as_recorded(rng: np.random.Generator, columns: dict, connected: np.ndarray) -> dict:
    """The API columns re-recorded as OAuth connected-app logins where `connected` (none changed elsewhere)."""
    if not connected.any():
        return {}
    n = len(connected)
    login_type = pick(rng, ("Remote Access 2.0", "Other Apex API", "Partner Product"), n, (0.6, 0.2, 0.2))
    application = pick(rng, V.CONNECTED_APPS, n)
    return {"LoginType": np.where(connected, login_type, columns["LoginType"]).astype(object),
            "Application": np.where(connected, application, columns["Application"]).astype(object),
            "ApiType": np.where(connected, None, columns["ApiType"]).astype(object),
            "ApiVersion": np.where(connected, None, columns["ApiVersion"]).astype(object)}


def _source_ips(rng: np.random.Generator, actors: np.ndarray, channel: str) -> np.ndarray:
    """Documentation-range addresses: a stable office address per user, carrier addresses on mobile."""
    n = len(actors)
    if channel == "mobile":
        return text_join("100.64.", rng.integers(0, 256, n).astype(str), ".", rng.integers(1, 255, n).astype(str))
    network = np.where(actors % 2 == 0, "198.51.100.", "203.0.113.")
    return text_join(network, (actors % 250 + 1).astype(str))
