"""Browser tests: a deployment (shards in the test's Ray, `rally gateway` as a process) and
headless Chromium driven by Playwright. Chromium is Debian's (/usr/bin/chromium, installed by
scripts/run.sh ensure_chromium); Playwright never downloads a browser. Screenshots are saved
under build/test-artifacts/web/ (or $RALLY_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from actors.client import RallyClient
from gateway.settings import Settings, load_settings
from tests.e2e.conftest import Gateway

ROOT = Path(__file__).resolve().parents[2]
KEY, SECRET = "web-key", "web-secret-0123456789abcdef-0123"
ADMIN_KEY, ADMIN_SECRET = "web-admin", "web-admin-secret-0123456789abcdef"
NET = "tv"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

CONFIG = """
namespace = "{ns}"
data_dir = "{data_dir}"
[redis]
url = "{redis_url}"
[shards]
channel = 2
member = 2
[clock]
watch_interval_s = 0
streak_rollover = false
[auth]
token_secret = "web-token-secret-0123456789abcdef"
[spend]
timeout_s = 120.0
[payouts]
enabled = false
[networks.tv.earn]
chat_points = 2
[[api_keys]]
key = "{key}"
secrets = ["{secret}"]
networks = ["tv"]
[[api_keys]]
key = "{admin_key}"
secrets = ["{admin_secret}"]
networks = ["tv"]
"""


def chromium_path() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        pytest.fail("chromium is not installed: run scripts/run.sh test (ensure_chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync API keeps an event loop running in this thread until it
    stops, and `asyncio.run()` in any test after it would then fail."""
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A phone-sized page; the test fails if the page's scripts threw or the console logged an
    error (a Content-Security-Policy violation, say). HTTP errors the pages handle themselves
    (401 before sign-in, 404 before the first analytics snapshot) are not counted."""
    context = browser.new_context(viewport={"width": 412, "height": 915})  # a phone
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    pg.on("console", lambda msg: errors.append(f"console.error: {msg.text}")
          if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)  # fmt: skip
    yield pg
    context.close()
    assert errors == [], errors


@pytest.fixture
def artifacts() -> Path:
    out = Path(os.environ.get("RALLY_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts" / "web"))
    out.mkdir(parents=True, exist_ok=True)
    return out


class Site:
    def __init__(
        self, settings: Settings, config: Path, client: RallyClient, gateway: Gateway
    ) -> None:
        self.settings = settings
        self.config = config
        self.client = client
        self.gateway = gateway

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def site(ray_cluster, redis_server, tmp_path_factory) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    """One deployment for the module's tests (each uses its own members, items and raffles)."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    tmp_path = tmp_path_factory.mktemp("web")
    config = tmp_path / "rally.toml"
    config.write_text(CONFIG.format(ns=namespace, data_dir=tmp_path, redis_url=redis_server.url,
                                    key=KEY, secret=SECRET, admin_key=ADMIN_KEY,
                                    admin_secret=ADMIN_SECRET))  # fmt: skip
    settings = load_settings(config, {})
    cfg = settings.runtime(redis_server.url)
    client = RallyClient(cfg).start(scheduler=False)
    gateway = Gateway(config, redis_server.url).start()
    yield Site(settings, config, client, gateway)
    gateway.stop()
    client.stop()
