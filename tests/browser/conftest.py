"""The dashboard served for real — uvicorn on 127.0.0.1 in a background thread, with the
dispatcher, a worker and the read-model projector running in-process on embedded settings,
delivering to a real receiver on loopback — and Debian's Chromium driven by Playwright.

Never downloads a browser: it uses /usr/bin/chromium. Where that (or Playwright) is
missing the tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest
import uvicorn

from domain.values import Actor
from infrastructure.api.app import create_app
from infrastructure.bootstrap import Services, start_projector
from infrastructure.settings import Settings
from tests.conftest import IN_CI
from tests.e2e.conftest import FAST_RETRIES, LOOPBACK, Pipeline, _run

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
EMAIL = "ann@shop.example"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@dataclass
class Site:
    """The running service: its pipeline (services, receiver, store), URL and API key."""

    pipeline: Pipeline
    url: str
    api_key: str

    @property
    def services(self) -> Services:
        return self.pipeline.services

    @property
    def store_id(self) -> UUID:
        return self.pipeline.store_id

    def sign_in(self, page: Page) -> None:
        """Sign in as a person would: type the key into its labelled field, press Enter."""
        page.goto(f"{self.url}/dashboard/sign-in")
        page.get_by_label("API key").fill(self.api_key)
        page.get_by_label("API key").press("Enter")
        page.wait_for_url(f"{self.url}/dashboard/webhooks")


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a background thread cannot
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("dashboard") / "data",
        allowed_targets=LOOPBACK,
        retry_schedule=FAST_RETRIES,
        worker_threads=4,
        lease_seconds=5,
    )
    running = _run(settings)  # builds, starts a worker and the dispatcher, makes a store
    pipeline = next(running)
    try:
        start_projector(pipeline.services)
        key = pipeline.services.webhooks.create_api_key(pipeline.store_id, EMAIL, Actor.system())
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        app = create_app(pipeline.services)
        server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="dashboard", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "the dashboard server did not start"
        try:
            yield Site(pipeline, f"http://127.0.0.1:{port}", key["apiKey"])
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            listener.close()
    finally:
        running.close()  # stops the worker, dispatcher, projector and receiver


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
        raise
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser profile (no cookies) per story, 1280 px wide."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 860},
        permissions=["clipboard-read", "clipboard-write"],
        base_url=site.url,
    )
    context.set_default_timeout(10_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def reload_until(page: Page, selector: str, timeout: float = 15.0) -> None:
    """Reload the (GET) page until ``selector`` matches: the read side is eventually
    consistent, a few hundred milliseconds behind."""
    deadline = time.monotonic() + timeout
    while page.locator(selector).count() == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector!r} did not appear on {page.url} in {timeout} s")
        time.sleep(0.2)
        page.reload()


def wait_for(condition: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {condition}")
