"""The walkthrough's browser step, as a person would take it, over plain HTTP: open the
authorization address, sign in as ada@example.com, approve for the first organization
offered, and print the code the browser lands with (``python walkthrough_browser.py
URL``). The redirect to the app's own address is read, never followed."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
from oauth_helpers import hidden_fields, org_options

PASSWORD = "correct horse battery"


async def approve(url: str) -> str:
    # unsafe=True: a browser keeps cookies for 127.0.0.1; aiohttp does not by default
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url, allow_redirects=False) as resp:
            login = await resp.text()
        form = {**hidden_fields(login), "email": "ada@example.com", "password": PASSWORD}
        login_url = urljoin(url, "/oauth/login")
        async with http.post(login_url, data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            back = urljoin(url, resp.headers["Location"])
        async with http.get(back, allow_redirects=False) as resp:
            consent = await resp.text()
        (org_id, _), *_ = org_options(consent)
        form = {**hidden_fields(consent), "org_id": org_id, "action": "approve"}
        async with http.post(back.split("?")[0], data=form, allow_redirects=False) as resp:
            landed = resp.headers["Location"]
    return parse_qs(urlsplit(landed).query)["code"][0]


if __name__ == "__main__":
    print(asyncio.run(approve(sys.argv[1])))
