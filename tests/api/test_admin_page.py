"""The admin web page in a real headless Chromium against the API served by uvicorn."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select, update

from api.admin.page import router as page_router
from db.engine import session_scope
from db.models import Job
from tests.api.test_admin_api import failed_deploy, fix_image, queued_deploy
from tests.conftest import ROOT, create_customer, wait_for

pytestmark = pytest.mark.usefixtures("worker")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_api(
    database: str, redis_db: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API served by uvicorn in a subprocess with the test environment."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited: {log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, 0.1, what="uvicorn to serve")
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; no browser is downloaded."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def admin(database: str) -> dict[str, Any]:
    return create_customer("ops-page", admin=True)


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/admin")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_login_retry_and_watch_the_job_succeed(
    client, customer, admin, fake_kube, live_api, browser, tmp_path
):
    failed = failed_deploy(client, customer, fake_kube)
    job_id = failed["job_id"]
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_api, admin["token"])
    expect(page).to_have_url(f"{live_api}/admin")
    cookie = next(c for c in context.cookies() if c["name"] == "sp_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"

    page.goto(f"{live_api}/admin?status=failed&customer_id={customer['customer_id']}")
    row = page.locator(f"#job-row-{job_id}")
    expect(row).to_be_visible()
    expect(row).to_contain_text(re.compile(r"ErrImagePull|ImagePullBackOff"))
    expect(row).to_contain_text(failed["service_id"])
    expect(row).to_contain_text("failed")
    expect(row.locator("ol.attempts li")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "admin-failed.png"), full_page=True)

    fix_image(fake_kube, customer, failed["name"])
    row.get_by_role("button", name="Retry").click()
    flash = page.locator("#flash")
    expect(flash).to_contain_text(f"Job {job_id} queued again as attempt 2")
    expect(page.locator(f"#job-row-{job_id}")).to_have_count(0)  # no longer failed

    flash.get_by_role("link").click()
    expect(page).to_have_url(f"{live_api}/admin/jobs/{job_id}")
    seen: list[str] = []

    def moved_on() -> bool:
        page.reload()
        status = page.locator("#job-status").inner_text()
        seen.append(status)
        return status == "succeeded"

    wait_for(moved_on, 30, 0.3, what="the retried job to succeed in the page")
    assert seen[0] in ("queued", "running", "succeeded") and "failed" not in seen
    attempts = page.locator("ol.attempts li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("failed")
    expect(attempts.nth(0)).to_contain_text(re.compile(r"ErrImagePull|ImagePullBackOff"))
    expect(attempts.nth(1)).to_contain_text("succeeded")
    page.screenshot(path=str(tmp_path / "admin-job-succeeded.png"), full_page=True)
    assert (tmp_path / "admin-job-succeeded.png").stat().st_size > 0
    context.close()


def test_customer_token_gets_the_403_page(customer, live_api, browser):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_api, customer["token"])
    expect(page.locator("h1")).to_have_text("403 · Forbidden")
    assert not any(c["name"] == "sp_admin" for c in context.cookies())
    # A customer token slipped into the cookie by hand is refused as well.
    context.add_cookies(
        [{"name": "sp_admin", "value": customer["token"], "url": f"{live_api}/admin"}]
    )
    response = page.goto(f"{live_api}/admin")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("403 · Forbidden")
    context.close()


def test_output_is_escaped(customer, admin, live_api, browser):
    job_id, _ = queued_deploy(customer)
    evil = {
        "reason": "<b>Bold</b>",
        "message": "<script>window.pwned = 1</script>",
        "location": None,
        "exit_code": None,
        "time": None,
    }
    with session_scope() as session:
        session.execute(update(Job).where(Job.uuid == job_id).values(status="failed", error=evil))
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_api, admin["token"])
    page.goto(f"{live_api}/admin?status=failed&customer_id={customer['customer_id']}")
    row = page.locator(f"#job-row-{job_id}")
    expect(row).to_contain_text("<script>window.pwned = 1</script>")
    expect(row).to_contain_text("<b>Bold</b>")
    assert page.evaluate("window.pwned") is None
    assert row.locator("script, b").count() == 0
    context.close()


def test_every_page_route_needs_an_admin_session_and_csrf(customer, admin, live_api):
    routes = {
        (method, route.path)
        for route in page_router.routes
        for method in getattr(route, "methods", ())
        if not route.path.startswith("/admin/login")
    }
    assert ("POST", "/admin/jobs/{job_id}/retry") in routes
    for method, path in sorted(routes):
        url = live_api + re.sub(r"\{[^}]+\}", "x-1", path)
        anonymous = httpx.request(method, url, follow_redirects=False)
        assert anonymous.status_code == 303, (method, path)
        assert anonymous.headers["location"] == "/admin/login"
        as_customer = httpx.request(
            method, url, cookies={"sp_admin": customer["token"]}, follow_redirects=False
        )
        assert as_customer.status_code == 403, (method, path)
        assert "Forbidden" in as_customer.text
        forged = httpx.request(
            method, url, cookies={"sp_admin": "spt_forged"}, follow_redirects=False
        )
        assert forged.status_code == 303, (method, path)

    job_id, _ = queued_deploy(customer)
    with session_scope() as session:
        session.execute(update(Job).where(Job.uuid == job_id).values(status="failed"))
    with httpx.Client(base_url=live_api, cookies={"sp_admin": admin["token"]}) as http:
        no_csrf = http.post(f"/admin/jobs/{job_id}/retry", data={"next": "/admin"})
        assert no_csrf.status_code == 403
        wrong = http.post(f"/admin/jobs/{job_id}/retry", data={"csrf": "0" * 64})
        assert wrong.status_code == 403
        page = http.get("/admin", params={"customer_id": customer["customer_id"]})
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
        assert csrf is not None
        cross_site = http.post(
            f"/admin/jobs/{job_id}/retry",
            data={"csrf": csrf.group(1)},
            headers={"Origin": "https://evil.example"},
        )
        assert cross_site.status_code == 403
    with session_scope() as session:
        status = session.scalar(select(Job.status).where(Job.uuid == job_id))
    assert status == "failed"  # nothing was retried
