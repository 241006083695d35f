"""Outbound HTTP clients that keep no cookies.

One client serves many parties: the hub's webhook client every subscription, the cluster
gateway every caller. A cookie one listener or upstream set would otherwise be stored in the
shared client and sent along on other parties' requests to the same host.
"""

from __future__ import annotations

import http.cookiejar


def no_cookie_jar() -> http.cookiejar.CookieJar:
    """A standard-library jar whose policy accepts no cookie (for ``httpx.AsyncClient(cookies=…)``)."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
