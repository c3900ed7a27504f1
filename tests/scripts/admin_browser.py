#!/usr/bin/env python3
"""Drives voxq's admin dashboard in a real headless Chromium (Debian's `chromium`,
through Playwright from PyPI, which is told to use it rather than download a browser).

    admin_browser.py '{"phase": "view", "base": "http://127.0.0.1:PORT", ...}'

One phase per run, so the test (tests/tests/admin.rs) can check the database between
them; the browser's cookies carry over in `state` (a Playwright storage-state file).

- view: the login form refuses a key without the admin scope, takes the admin key;
  every page is read and photographed.
- act: retries the failed job from the failures page, pauses the bulk batch.
- finish: a POST without its CSRF token is refused (by the browser, and by a bare
  request); resumes the batch; signs out, and the old session no longer works.

Prints one JSON object: what each page showed. Screenshots (full page PNGs) go to `out`.
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

P = json.loads(sys.argv[1])
BASE = P["base"]
OUT = P["out"]
CHROMIUM = os.environ.get("VOXQ_CHROMIUM", "/usr/bin/chromium")
seen = {"shots": []}


def shot(page, name):
    path = os.path.join(OUT, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    seen["shots"].append(path)


def texts(page, selector):
    return [e.inner_text().strip() for e in page.query_selector_all(selector)]


def submit(page, button):
    """Clicks a form's submit button; the status of the POST's answer, the page after."""
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        with page.expect_navigation():
            button.click()
    return answer.value.status


def login(page, key):
    page.goto(f"{BASE}/admin/login")
    page.fill("#key", key)
    return submit(page, page.locator("form[action='/admin/login'] button[type=submit]"))


def view(context, page):
    page.goto(f"{BASE}/admin")
    seen["unauthenticated_url"] = page.url
    shot(page, "login")

    # A valid key without the admin scope is refused with 403, and gets no session.
    seen["user_login_status"] = login(page, P["user_key"])
    seen["user_login_alert"] = page.inner_text("[role=alert]")
    seen["user_login_cookies"] = [c["name"] for c in context.cookies() if c["name"] == "voxq_admin"]
    shot(page, "login-refused")

    seen["admin_login_status"] = login(page, P["admin_key"])
    seen["after_login_url"] = page.url
    seen["cookies"] = [
        {k: c[k] for k in ("name", "value", "httpOnly", "secure", "sameSite", "path")}
        for c in context.cookies()
    ]

    # Overview: lanes, jobs per minute, workers.
    lanes = {}
    for row in page.query_selector_all("#lanes tr[data-lane]"):
        cell = lambda c: row.query_selector(f"td.{c}").inner_text().strip()
        lanes[row.get_attribute("data-lane")] = {
            c: cell(c) for c in ("waiting", "queued", "processing", "completed", "failed")
        }
    seen["lanes"] = lanes
    seen["finished_hour"] = page.inner_text("#finished-hour")
    seen["workers_alive"] = page.inner_text("#workers-alive")
    seen["chart"] = {
        "bars_completed": len(page.query_selector_all("#jobs-per-minute svg rect.ok")),
        "bars_failed": len(page.query_selector_all("#jobs-per-minute svg rect.ko")),
        "tooltips": [
            t.text_content() for t in page.query_selector_all("#jobs-per-minute svg title")
        ][-3:],
    }
    seen["workers"] = [
        {
            "name": row.get_attribute("data-name"),
            "cells": [c.inner_text().strip() for c in row.query_selector_all("td")],
        }
        for row in page.query_selector_all("#workers tr.worker")
    ]
    shot(page, "overview")

    page.click("nav a[href='/admin/failures']")
    seen["failures"] = [
        {
            "code": g.get_attribute("data-code"),
            "title": g.query_selector("h2").inner_text(),
            "jobs": [a.get_attribute("href") for a in g.query_selector_all("a[href^='/admin/jobs/']")],
            "retry_buttons": len(g.query_selector_all("form[action$='/retry'] button")),
        }
        for g in page.query_selector_all("div.failure")
    ]
    shot(page, "failures")

    page.click("nav a[href='/admin/batches']")
    seen["batches"] = batch_rows(page)
    shot(page, "batches")

    page.click("nav a[href='/admin/costs']")
    seen["costs"] = [
        {
            "tenant": row.get_attribute("data-tenant"),
            "day": row.query_selector("td.cost-day").inner_text(),
            "month": row.query_selector("td.cost-month").inner_text(),
        }
        for row in page.query_selector_all("#costs tr.cost")
    ]
    shot(page, "costs")

    page.goto(f"{BASE}/admin/failures")
    page.click(f"div.failure a[href='/admin/jobs/{P['failed_job']}']")
    seen["failed_job"] = {
        "status": page.get_attribute("#job", "data-status"),
        "error_code": page.inner_text("#error-code"),
        "retry_buttons": len(page.query_selector_all("#actions form[action$='/retry'] button")),
    }
    shot(page, "job-failed")

    page.goto(f"{BASE}/admin/jobs/{P['completed_job']}")
    seen["completed_job"] = {
        "status": page.get_attribute("#job", "data-status"),
        "version": page.inner_text("#version"),
        "reprocess_forms": len(page.query_selector_all("form[action$='/reprocess']")),
    }
    shot(page, "job-completed")


def batch_rows(page):
    return [
        {
            "id": row.get_attribute("data-id"),
            "status": row.get_attribute("data-status"),
            "progress": row.query_selector("div.legend").inner_text(),
            "buttons": texts(row, "button"),
        }
        for row in page.query_selector_all("tr.batch")
    ]


def act(context, page):
    page.goto(f"{BASE}/admin/failures")
    row = page.locator("tr", has=page.locator(f"a[href='/admin/jobs/{P['failed_job']}']"))
    seen["retry_status"] = submit(page, row.locator("form[action$='/retry'] button"))
    seen["retry_url"] = page.url
    seen["retry_notice"] = page.inner_text("div.notice")
    seen["retry_requested_version"] = page.inner_text("#requested-version")
    shot(page, "job-retried")

    page.goto(f"{BASE}/admin/batches")
    row = page.locator(f"tr.batch[data-id='{P['bulk_batch']}']")
    seen["pause_status"] = submit(page, row.locator("form[action$='/pause'] button"))
    seen["pause_notice"] = page.inner_text("div.notice")
    seen["batches_after_pause"] = batch_rows(page)
    shot(page, "batches-paused")


def finish(context, page):
    bulk = P["bulk_batch"]
    # The browser submits the Resume form with its CSRF field removed: 403, and a page
    # that says why.
    page.goto(f"{BASE}/admin/batches")
    row = page.locator(f"tr.batch[data-id='{bulk}']")
    row.locator("input[name=_csrf]").evaluate("e => e.remove()")
    seen["no_token_status"] = submit(page, row.locator("form[action$='/resume'] button"))
    seen["no_token_page"] = page.inner_text("body")
    shot(page, "csrf-refused")
    # Bare requests with the session cookie: no token, a wrong token.
    r = context.request.post(f"{BASE}/admin/batches/{bulk}/resume", form={}, max_redirects=0)
    seen["bare_no_token_status"] = r.status
    r = context.request.post(
        f"{BASE}/admin/batches/{bulk}/resume", form={"_csrf": "00" * 32}, max_redirects=0
    )
    seen["bare_bad_token_status"] = r.status
    page.goto(f"{BASE}/admin/batches")
    seen["batches_after_refusals"] = batch_rows(page)

    row = page.locator(f"tr.batch[data-id='{bulk}']")
    seen["resume_status"] = submit(page, row.locator("form[action$='/resume'] button"))
    seen["resume_notice"] = page.inner_text("div.notice")
    seen["batches_after_resume"] = batch_rows(page)
    shot(page, "batches-resumed")

    seen["logout_status"] = submit(page, page.locator("form[action='/admin/logout'] button"))
    seen["after_logout_url"] = page.url
    page.goto(f"{BASE}/admin")
    seen["after_logout_admin_url"] = page.url


def main():
    os.makedirs(OUT, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        seen["browser"] = browser.version
        state = P["state"] if P["phase"] != "view" else None
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, storage_state=state
        )
        page = context.new_page()
        {"view": view, "act": act, "finish": finish}[P["phase"]](context, page)
        context.storage_state(path=P["state"])
        if P["phase"] == "finish":
            # The cookie the browser had before signing out no longer opens a page.
            old = browser.new_context(storage_state=P["state_before_logout"])
            p = old.new_page()
            p.goto(f"{BASE}/admin")
            seen["old_session_url"] = p.url
            old.close()
        browser.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
