"""The member portal and the admin dashboard in headless Chromium, against a real gateway,
Redis and Ray: the portal shows the balance after earning and after a redemption made on the
page; the dashboard's live feed shows events as they are posted, and a redemption's
celebration. Screenshots go to the test artifacts."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from playwright.sync_api import Page, expect

from gateway.auth import TokenSigner
from gateway.signing import bearer, signed_headers
from tests.e2e.conftest import post, rally_cli

from .conftest import ADMIN_KEY, ADMIN_SECRET, KEY, NET, SECRET, Site

WAIT_MS = 60_000
seq = iter(range(10**6))


def earn(site: Site, points: dict[str, int]) -> None:
    now = time.time()
    events = [{"kind": "custom", "id": f"w{next(seq)}-{now}", "network": NET, "channel": "c1",
               "user_id": u, "user_name": u.title(), "ts": now, "points": p}
              for u, p in points.items()]  # fmt: skip
    status, body = post(site.url, events, key=KEY, secret=SECRET)
    assert status == 202, body
    assert site.client.wait_idle(120)


def call(site: Site, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    raw = b"" if body is None else msgspec.json.encode(body)
    h = headers or signed_headers(ADMIN_KEY, ADMIN_SECRET, raw, target=target, method=method)
    req = urllib.request.Request(site.url + target, data=raw if body is not None else None,
                                 headers={**h, "Content-Type": "application/json"}, method=method)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def balance(site: Site, user: str) -> int:
    status, m = call(site, "GET", f"/v1/members/{user}?network={NET}")
    assert status == 200, m
    return int(m["balance"])


def put_item(site: Site, item_id: str, name: str, cost: int) -> None:
    status, item = call(site, "PUT", f"/v1/store/items/{item_id}?network={NET}",
                        {"name": name, "cost": cost, "stock": 50})  # fmt: skip
    assert status in (200, 201), item


def test_portal_shows_balance_after_earning_and_spending(
    site: Site, page: Page, artifacts: Path
) -> None:
    put_item(site, "mug", "Rally mug", 300)
    earn(site, {"alice": 900})
    had = balance(site, "alice")
    assert had >= 900
    done = rally_cli("portal-link", "--config", str(site.config), "--member", "alice",
                     "--base-url", site.url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith(f"{site.url}/portal/#login=")

    page.goto(link)
    expect(page.get_by_test_id("balance")).to_have_text(f"{had:,}", timeout=WAIT_MS)
    assert "#login" not in page.url  # the token left the address bar
    expect(page.locator("#tier")).to_have_text("Silver")
    expect(page.locator("#ledger tr")).not_to_have_count(0)
    page.screenshot(path=str(artifacts / "portal-before.png"), full_page=True)

    # another sign-in link opened in a second tab: a new cookie with a new CSRF token, and the
    # first tab still redeems (it takes the new token: the session is still alice's)
    again = rally_cli("portal-link", "--config", str(site.config), "--member", "alice",
                      "--base-url", site.url)  # fmt: skip
    tab = page.context.new_page()
    tab.goto(again.stdout.strip())
    expect(tab.get_by_test_id("balance")).to_have_text(f"{had:,}", timeout=WAIT_MS)
    tab.close()

    page.locator('button[data-item="mug"]').click()
    expect(page.locator("[data-celebration]")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#store-msg")).to_have_text("Redeemed Rally mug!", timeout=WAIT_MS)
    expect(page.get_by_test_id("balance")).to_have_text(f"{had - 300:,}", timeout=WAIT_MS)
    expect(page.locator("#ledger")).to_contain_text("\u2212300", timeout=WAIT_MS)  # a minus sign
    assert balance(site, "alice") == had - 300
    page.screenshot(path=str(artifacts / "portal.png"), full_page=True)

    # the session cookie is HttpOnly: the page's script cannot read it
    assert page.evaluate("document.cookie") == ""


def test_dashboard_feed_updates_and_celebrates_a_redemption(
    site: Site, page: Page, artifacts: Path
) -> None:
    put_item(site, "hoodie", "Hoodie", 200)
    earn(site, {"carol": 50, "dave": 20})
    page.goto(f"{site.url}/dashboard/")
    page.fill("#network", NET)
    page.fill("#key", ADMIN_KEY)
    page.fill("#secret", ADMIN_SECRET)
    page.click("#signin-form button")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)

    # events posted now: bob crosses into Silver, which the feed shows
    earn(site, {"bob": 600})
    expect(page.locator("li[data-kind='tier_changed']")).to_contain_text("bob", timeout=WAIT_MS)

    # bob redeems (from his own token, not the page): the dashboard celebrates
    token = TokenSigner.from_settings(site.settings)
    assert token is not None
    target = f"/v1/members/bob/redemptions?network={NET}"
    status, red = call(site, "POST", target, {"item_id": "hoodie"},
                       headers={**bearer(token.issue(NET, "bob")[0]), "Idempotency-Key": "dash-1"})  # fmt: skip
    assert status == 201, red
    expect(page.locator("li[data-kind='item_redeemed']")).to_contain_text("Hoodie", timeout=WAIT_MS)
    expect(page.locator("[data-celebration]")).to_contain_text("bob redeemed Hoodie")
    expect(page.locator("li.celebrate")).to_have_count(1)
    silver = sum(call(site, "GET", f"/v1/members/{u}?network={NET}")[1].get("tier") == "Silver"
                 for u in ("alice", "bob", "carol", "dave"))  # fmt: skip
    expect(page.locator("[data-tier='Silver']")).to_have_text(str(silver), timeout=WAIT_MS)
    expect(page.locator("#ready")).to_have_text("ready", timeout=WAIT_MS)
    page.set_viewport_size({"width": 1200, "height": 900})
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)


def test_dashboard_manages_chat_commands(site: Site, page: Page, artifacts: Path) -> None:
    earn(site, {"erin": 10})  # channel c1 exists
    admin_signin(site, page)
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    expect(page.locator("#command-list")).to_contain_text("No commands", timeout=WAIT_MS)

    # a command of every channel, then one of c1 only
    page.fill("#command-name", "!discord")
    page.fill("#command-response", "Join us at example.org, {user}")
    page.select_option("#command-role", "subscriber")
    page.fill("#command-cooldown", "30")
    page.click("#command-form button")
    row = page.locator("[data-command='discord']")
    expect(row).to_contain_text("Join us at example.org", timeout=WAIT_MS)
    expect(row).to_contain_text("subscriber · 30s per viewer")
    status, stored = call(site, "GET", f"/v1/channels/*/commands?network={NET}")
    assert status == 200, stored
    spec = {c["name"]: c for c in stored["commands"]}["discord"]
    assert (spec["min_role"], spec["cooldown_user_s"]) == ("subscriber", 30.0)

    page.select_option("#command-channel", "c1")
    expect(page.locator("#command-list")).to_contain_text("No commands", timeout=WAIT_MS)
    page.fill("#command-name", "Bad Name")  # the API's 400 names the field
    page.click("#command-form button")
    expect(page.locator("#command-msg")).to_contain_text("name", timeout=WAIT_MS)
    assert call(site, "GET", f"/v1/channels/c1/commands?network={NET}")[1]["commands"] == []
    page.fill("#command-name", "lurk")
    page.fill("#command-response", "{user} is lurking")
    page.click("#command-form button")
    expect(page.locator("[data-command='lurk']")).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "dashboard-commands.png"), full_page=True)

    page.select_option("#command-channel", "*")
    page.locator("[data-command='discord'] [data-op='delete']").click()
    expect(page.locator("[data-command='discord']")).to_have_count(0, timeout=WAIT_MS)
    assert call(site, "GET", f"/v1/channels/*/commands?network={NET}")[1]["commands"] == []
    assert [
        c["name"]
        for c in call(site, "GET", f"/v1/channels/c1/commands?network={NET}")[1]["commands"]
    ] == ["lurk"]


def test_dashboard_runs_a_raffle_and_the_portal_links_its_verification(
    site: Site, page: Page, browser: Any, artifacts: Path
) -> None:
    earn(site, {"alice": 200})
    page.goto(f"{site.url}/dashboard/")
    page.fill("#network", NET)
    page.fill("#key", ADMIN_KEY)
    page.fill("#secret", ADMIN_SECRET)
    page.click("#signin-form button")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)

    page.fill("#raffle-id", "spring")
    page.fill("#raffle-title", "Spring draw")
    page.click("#raffle-form button")
    row = page.locator("[data-raffle='spring']")
    expect(row).to_be_visible(timeout=WAIT_MS)
    row.locator("[data-op='open']").click()
    expect(row.locator("[data-status]")).to_have_text("open", timeout=WAIT_MS)
    expect(row).to_contain_text("commitment")

    # alice turns points into two tickets in her portal
    done = rally_cli("portal-link", "--config", str(site.config), "--member", "alice",
                     "--base-url", site.url)  # fmt: skip
    portal = browser.new_context(viewport={"width": 412, "height": 915}).new_page()
    portal.goto(done.stdout.strip())
    had = balance(site, "alice")
    buy = portal.locator("[data-open-raffle='spring'] button")
    expect(buy).to_have_text("Buy · 10 pts", timeout=WAIT_MS)
    buy.click()
    expect(portal.locator("[data-open-raffle='spring']")).to_contain_text(
        "you hold 1 of 100", timeout=WAIT_MS
    )
    buy.click()
    expect(portal.locator("[data-open-raffle='spring']")).to_contain_text(
        "you hold 2 of 100", timeout=WAIT_MS
    )
    expect(portal.get_by_test_id("balance")).to_have_text(f"{had - 20:,}", timeout=WAIT_MS)
    assert balance(site, "alice") == had - 20

    row.locator("[data-op='close']").click()
    expect(row.locator("[data-status]")).to_have_text("closed", timeout=WAIT_MS)
    expect(page.locator("li[data-kind='raffle_opened']")).to_contain_text("Spring draw is open")
    expect(page.locator("li[data-kind='raffle_closed']")).to_contain_text(
        "2 tickets, 1 entrants", timeout=WAIT_MS
    )
    row.locator("[data-op='draw']").click()
    expect(page.locator("li[data-kind='raffle_drawn']")).to_contain_text("alice", timeout=WAIT_MS)
    expect(page.locator("[data-celebration]")).to_contain_text("alice won Spring draw")
    expect(row.locator("[data-status]")).to_have_text("drawn", timeout=WAIT_MS)
    expect(row).to_contain_text("winners alice")
    page.screenshot(path=str(artifacts / "dashboard-raffle.png"), full_page=True)

    # alice's portal lists her tickets, that she won, and links the public verification
    expect(portal.locator("[data-open-raffle='spring']")).to_have_count(0, timeout=WAIT_MS)
    tickets = portal.locator("#tickets")
    expect(tickets).to_contain_text("2 tickets", timeout=WAIT_MS)
    expect(tickets).to_contain_text("you won!")
    href = tickets.locator("a").get_attribute("href")
    assert href == f"/v1/raffles/spring/verify?network={NET}"
    with urllib.request.urlopen(site.url + href, timeout=30) as resp:
        assert json.loads(resp.read())["ok"] is True
    portal.context.close()


def test_dashboard_mints_vouchers_to_a_qr_sheet_and_flags_forged_scans(
    site: Site, page: Page, artifacts: Path
) -> None:
    earn(site, {"erin": 10})
    page.goto(f"{site.url}/dashboard/")
    page.fill("#network", NET)
    page.fill("#key", ADMIN_KEY)
    page.fill("#secret", ADMIN_SECRET)
    page.click("#signin-form button")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)

    page.fill("#voucher-count", "3")
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click("#voucher-form button")
    sheet = Path(download.value.path()).read_text()
    assert sheet.count("<svg") == 3
    expect(page.locator("#batch-list")).to_contain_text("3 codes", timeout=WAIT_MS)

    status, minted = call(site, "POST", f"/v1/vouchers/batches?network={NET}",
                          {"count": 1, "points": 25, "expires_in_s": 3_600})  # fmt: skip
    assert status == 201, minted
    token = TokenSigner.from_settings(site.settings)
    assert token is not None
    erin = bearer(token.issue(NET, "erin")[0])
    scan = f"/v1/members/erin/vouchers?network={NET}"
    status, refused = call(site, "POST", scan, {"code": "RP1-forged-code-0000"}, headers=erin)
    assert 400 <= status < 500, refused
    status, ok = call(site, "POST", scan, {"code": minted["codes"][0]}, headers=erin)
    assert status in (200, 201), ok
    expect(page.locator("li[data-kind='voucher_scanned']")).to_contain_text("erin", timeout=WAIT_MS)
    expect(page.locator("#scan-list tr[data-outcome='redeemed']")).to_have_count(1, timeout=WAIT_MS)
    flagged = page.locator("#scan-list tr:not([data-outcome='redeemed'])")
    expect(flagged).to_have_count(1)
    expect(flagged).to_contain_text("⚑")
    refused = page.locator("li[data-kind='voucher_refused']")  # flagged live in the feed too
    expect(refused).to_contain_text("erin's voucher scan was refused: malformed")
    expect(refused).to_have_class("flagged")
    assert_fits_phone(page)  # long code digests wrap on a phone


def assert_fits_phone(page: Page) -> None:
    """Nothing on the page is wider than the phone's viewport (no sideways scrolling)."""
    wide = page.evaluate("""() => [...document.querySelectorAll("main *")]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
        .map((e) => `${e.tagName}#${e.id}.${e.className}`)""")
    assert wide == [], wide


def admin_signin(site: Site, page: Page) -> None:
    page.goto(f"{site.url}/dashboard/")
    page.fill("#network", NET)
    page.fill("#key", ADMIN_KEY)
    page.fill("#secret", ADMIN_SECRET)
    page.click("#signin-form button")
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)


def test_dashboard_payouts_panel_retries_dead_letters_and_voids(
    site: Site, page: Page, artifacts: Path
) -> None:
    """Payouts listed with their dead letters; retry moves a dead payout back to reserved,
    void a requested one to voided (through the payout routes, as the admin session). The
    network's earnings reach the page as summed totals (points/s, top earners)."""
    import redis

    from actors.keys import Keys
    from actors.payout import PayoutStore
    from engine import payout as eng

    r = redis.Redis.from_url(site.gateway.redis_url)
    store = PayoutStore(r, Keys(site.settings.namespace), site.settings.payouts.rules())
    now = time.time()
    reqs = [eng.Request(network=NET, user_id=u, points=150, key=f"k-{u}-{now}",
                        destination="https://example.invalid/hook")
            for u in ("gina", "hank")]  # fmt: skip
    made = [p for _, p in store.create(reqs, now)]
    assert all(made)
    dead_id, open_id = made[0].id, made[1].id  # type: ignore[union-attr]
    for to, extra in (("reserved", {}), ("sending", {}), ("dead", {"reason": "receiver said 500"})):
        store.update(dead_id, lambda p, t, to=to, extra=extra: eng.move(p, to, t, **extra), now)
    r.close()

    admin_signin(site, page)
    dead = page.locator(f"[data-payout='{dead_id}']")
    expect(dead.locator("[data-status]")).to_have_text("dead", timeout=WAIT_MS)
    expect(dead).to_contain_text("receiver said 500")
    expect(page.locator("#payout-dead")).not_to_have_text("0 dead")
    assert_fits_phone(page)  # destinations and reasons wrap on a phone
    page.select_option("#payout-status", "dead")
    expect(page.locator(f"[data-payout='{open_id}']")).to_have_count(0, timeout=WAIT_MS)
    dead.locator("[data-op='retry']").click()
    expect(page.locator("#payout-msg")).to_contain_text("retry done", timeout=WAIT_MS)
    page.select_option("#payout-status", "")
    expect(dead.locator("[data-status]")).to_have_text("reserved", timeout=WAIT_MS)
    row = page.locator(f"[data-payout='{open_id}']")
    row.locator("[data-op='void']").click()
    expect(row.locator("[data-status]")).to_have_text("voided", timeout=WAIT_MS)
    expect(page.locator("li[data-kind='payout_voided']")).to_contain_text(
        "hank's payout of 150 points was voided", timeout=WAIT_MS
    )
    expect(row.locator("[data-op]")).to_have_count(0)

    earn(site, {"ivy": 70})  # summed earnings: a figure on the page, not a feed line
    expect(page.locator("#earners")).to_contain_text("ivy", timeout=WAIT_MS)
    assert page.locator("li[data-kind='earnings']").count() == 0
    page.set_viewport_size({"width": 1200, "height": 900})
    page.screenshot(path=str(artifacts / "dashboard-payouts.png"), full_page=True)


def test_dashboard_analytics_panel_shows_snapshot_kpis(
    site: Site, page: Page, artifacts: Path
) -> None:
    earn(site, {"jack": 30})
    done = rally_cli("analytics", "snapshot", "--config", str(site.config))
    assert done.returncode == 0, done.stderr
    status, rep = call(site, "GET", f"/v1/analytics/kpis?network={NET}")
    assert status == 200, rep
    admin_signin(site, page)
    expect(page.locator("#analytics")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("[data-kpi]").first).to_be_visible(timeout=WAIT_MS)
    kpi = page.locator("[data-kpi]").first.get_attribute("data-kpi")
    assert kpi is not None
    name, field = kpi.split(".", 1)
    assert isinstance(rep[name][field], (int, float))
    page.set_viewport_size({"width": 1200, "height": 900})
    page.screenshot(path=str(artifacts / "dashboard-analytics.png"), full_page=True)


def test_portal_lists_linked_wallets_and_own_earnings(
    site: Site, page: Page, artifacts: Path
) -> None:
    import redis

    from actors.chain_sink import link_wallet
    from actors.keys import Keys

    address = "0x00000000000000000000000000000000000000aa"
    r = redis.Redis.from_url(site.gateway.redis_url)
    link_wallet(r, Keys(site.settings.namespace), NET, "kate", address)
    r.close()
    earn(site, {"kate": 10})
    done = rally_cli("portal-link", "--config", str(site.config), "--member", "kate",
                     "--base-url", site.url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # an injected wallet (window.ethereum) whose personal_sign is eth_account, in Python
    from eth_account import Account
    from eth_account.messages import encode_defunct

    signer = Account.create()
    page.expose_function("pySign", lambda data: "0x" + Account.sign_message(
        encode_defunct(hexstr=data), signer.key).signature.hex().removeprefix("0x"))  # fmt: skip
    page.add_init_script(f"""window.ethereum = {{ request: async ({{ method, params }}) =>
        method === "eth_requestAccounts" ? ["{signer.address}"] : window.pySign(params[0]) }};""")
    page.goto(done.stdout.strip())
    expect(page.locator(f"[data-wallet='{address}']")).to_contain_text("payouts go here",
                                                                      timeout=WAIT_MS)  # fmt: skip
    page.click("#wallet-link")
    expect(page.locator(f"[data-wallet='{signer.address}']")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#wallet-msg")).to_contain_text("Linked")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    expect(page.locator("#feed-state")).to_have_text("live", timeout=WAIT_MS)
    had = balance(site, "kate")
    earn(site, {"kate": 45, "liam": 45})
    expect(page.locator("li[data-kind='earned']")).to_contain_text("kate earned 45 points",
                                                                  timeout=WAIT_MS)  # fmt: skip
    expect(page.get_by_test_id("balance")).to_have_text(f"{had + 45:,}", timeout=WAIT_MS)
    expect(page.locator("#ledger")).to_contain_text("+45", timeout=WAIT_MS)
    expect(page.locator("li[data-kind='earned']")).not_to_contain_text("liam")
    page.screenshot(path=str(artifacts / "portal-wallets.png"), full_page=True)


def test_portal_signs_in_with_a_linked_wallet(site: Site, page: Page, artifacts: Path) -> None:
    """No login link: the member signs in with the wallet they linked (Sign-In with Ethereum
    through an injected window.ethereum that signs with eth_account, in Python), and sees
    their balance; the session is a member's (no admin route)."""
    import redis
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from actors.keys import Keys
    from actors.wallets import link_wallet

    signer = Account.create()
    page.expose_function("pySign", lambda data: "0x" + Account.sign_message(
        encode_defunct(hexstr=data), signer.key).signature.hex().removeprefix("0x"))  # fmt: skip
    page.add_init_script(f"""window.ethereum = {{ request: async ({{ method, params }}) =>
        method === "eth_requestAccounts" ? ["{signer.address}"] : window.pySign(params[0]) }};""")
    earn(site, {"nora": 70})
    had = balance(site, "nora")
    page.goto(f"{site.url}/portal/?network={NET}")
    expect(page.locator("#wallet-signin-btn")).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "portal-wallet-signin.png"), full_page=True)
    # not linked yet: refused, saying why
    page.click("#wallet-signin-btn")
    expect(page.locator("#signin-msg")).to_contain_text("link the wallet first", timeout=WAIT_MS)
    r = redis.Redis.from_url(site.gateway.redis_url)
    link_wallet(r, Keys(site.settings.namespace), NET, "nora", signer.address)
    r.close()
    page.click("#wallet-signin-btn")
    expect(page.get_by_test_id("balance")).to_have_text(f"{had:,}", timeout=WAIT_MS)
    expect(page.locator("#who")).to_have_text(f"nora · {NET}")
    expect(page.locator(f"[data-wallet='{signer.address}']")).to_be_visible(timeout=WAIT_MS)
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    status = page.evaluate(
        """async (net) => [(await fetch(`/v1/admin/overview?network=${net}`)).status,
                          (await fetch(`/v1/members/kate?network=${net}`)).status]""",
        NET,
    )
    assert status == [403, 403]
    page.screenshot(path=str(artifacts / "portal-wallet-signed-in.png"), full_page=True)
