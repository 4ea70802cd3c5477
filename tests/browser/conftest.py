"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, step screenshots.

The browser is the system's ``/usr/bin/chromium`` (apt package ``chromium``; ``.ci/run``
installs it), never one downloaded by Playwright. Under ``CI`` a missing browser
fails the run; elsewhere the tests are skipped with one line saying how to install it.

Each test's ``shots`` fixture saves a screenshot per step; they are kept (under
``var/browser-screenshots/<test>/``, git-ignored) and their folder printed only
when the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.metadata_db import metadata_db, postgres_server

__all__ = ["metadata_db", "postgres_server"]

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "apt-get install -y chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "browser-screenshots"
# Root in a container: no sandbox; no GPU; nothing that reaches the network by itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"no {CHROMIUM} ({INSTALL_HINT})"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (make setup)"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class Shots:
    """Screenshot after each step; kept only if the test fails."""

    def __init__(self, folder: Path, node: pytest.Item) -> None:
        self.folder = folder
        self.node = node
        self.page = None
        self.count = 0
        self.finished = False

    def finish(self) -> None:
        """Keep and print the screenshots if the test failed (once, while the page lives)."""
        if self.finished:
            return
        self.finished = True
        report = getattr(self.node, "rep_call", None)
        failed = report is not None and report.failed
        if failed and self.page is not None:
            try:
                self("at failure")
            except Exception as exc:  # the page may be gone; keep the earlier steps
                print(f"(no screenshot at failure: {exc})")
        if failed and self.count:
            print(f"\nbrowser screenshots of each step: {self.folder}")
            self.node.add_report_section("call", "screenshots", str(self.folder))
        else:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __call__(self, step: str, page=None) -> None:
        page = page or self.page
        if page is None:
            return
        self.count += 1
        name = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        self.folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


# Per module: while sync_playwright runs, an asyncio loop is running in this thread, and a later
# module's asyncio.run (the trigger tests) would be refused in the same pytest-xdist worker.
@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium under CI: {reason}", pytrace=False)
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright, shots) -> Iterator[object]:
    """Chromium with a fresh profile (its own ``--user-data-dir``): no cookies, no login."""
    profile = tempfile.mkdtemp(prefix="kfp-bridge-chromium-")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        timezone_id="Asia/Tokyo",  # what an operator in Japan sees (the UI follows the browser)
        viewport={"width": 1400, "height": 900},
    )
    context.set_default_timeout(30_000)
    shots.page = context.pages[0] if context.pages else context.new_page()
    try:
        yield context
    finally:
        shots.finish()
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def shots(request) -> Iterator[Shots]:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    recorder = Shots(folder, request.node)
    yield recorder
    recorder.finish()
