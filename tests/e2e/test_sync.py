"""The sync server end to end in Chromium: a fresh browser profile starts from the site's
prior and does measurably better on its first visits; uploads are noisy aggregates, sent only
with consent and never under Global Privacy Control."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from conftest import serving
from visitors import FAVOURED, VARIANTS, visitor

from microadjust.browser.sync_client import SyncClient

from .helpers import decided, record

KEY = "e2e-upload-key"
ADMIN = "e2e-admin-token-0123456789"
VISITS = 10
FIXED_TIME = "2026-03-02T10:30:00"  # the page's clock: the same context on every visit

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sync e2e</title>
<script type="application/json" data-microadjust>%s</script>
<script src="/microadjust/microadjust.js" defer></script></head>
<body data-ma-page="shop"><main><p style="height: 2000px">Coffee.</p>
<div data-ma-slot="cta"><a href="#buy" data-ma-goal="click">Shop the beans</a>
  <template data-ma-variant="discount"><a href="#buy" data-ma-goal="click">15%% off</a></template>
  <template data-ma-variant="quiz"><a href="#buy" data-ma-goal="click">Your roast</a></template>
</div></main></body></html>"""  # the slot is below the fold: decisions apply at once


@pytest.fixture(scope="module")
def sync_server(built, tmp_path_factory):
    """serve.py --sync on a free loopback port, with a fresh SQLite data directory."""
    data = tmp_path_factory.mktemp("sync-data")
    options = [
        "--sync", "--data-dir", str(data), "--site", f"shop={KEY}", "--site", f"empty={KEY}",
        "--admin-token", ADMIN, "--publish-interval", "0", "--min-events", "1",
        "--rate", "1000", "--burst", "100000",
    ]  # fmt: skip
    with serving(*options, health="/v1/health") as base:
        yield base


@pytest.fixture(scope="module")
def seeded(sync_server):
    """60 simulated visitors upload their noisy aggregates through the API, as browsers would."""
    with httpx.Client(base_url=sync_server) as client:
        for seed in range(60):
            sync = SyncClient()
            sync.configure({"site": "shop", "upload": True}, consent=True)
            body = sync.next_upload(visitor(seed), rng=np.random.default_rng(seed))
            response = client.post(
                "/v1/sites/shop/uploads", json=body, headers={"X-Microadjust-Key": KEY}
            )
            assert response.status_code == 201, response.text
        priors = client.get("/v1/sites/shop/priors").json()
    assert priors["version"] >= 1 and set(priors["slots"]["cta"]["actions"]) == set(VARIANTS)
    return sync_server


def route_page(context, base: str, config: dict) -> str:
    """The test page, with ``config``, served at ``base``/sync-e2e.html in this profile."""
    url = base + "/sync-e2e.html"
    html = PAGE % json.dumps(config)
    context.route(url, lambda route: route.fulfill(body=html, content_type="text/html"))
    return url


def first_visit(browser, base: str, config: dict) -> str:
    """Open the page in a fresh profile; click the CTA if it shows the favoured variant."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.clock.set_fixed_time(FIXED_TIME)
        record(page)
        page.goto(route_page(context, base, config))
        variant = decided(page, "cta")["cta"]["variant"]
        if variant == FAVOURED:
            page.click("[data-ma-slot=cta] a")
        return variant
    finally:
        context.close()


def test_first_visits_do_better_with_the_sites_prior(seeded, browser):
    """Same seeds, same clock, same page: only the server's prior differs."""
    rates = {}
    for site in ("shop", "empty"):  # "empty": a site the server has no prior for
        rewarded = 0
        for seed in range(VISITS):
            config = {"seed": seed, "sync": {"site": site, "key": KEY, "upload": False}}
            rewarded += first_visit(browser, seeded, config) == FAVOURED
        rates[site] = rewarded / VISITS
    print(
        f"first-visit reward rate: with the site prior {rates['shop']:.0%}, "
        f"without {rates['empty']:.0%}"
    )
    assert rates["shop"] >= 0.7, rates
    assert rates["shop"] >= rates["empty"] + 0.3, rates


def uploads(base: str) -> int:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.get(f"{base}/v1/admin/sites/shop", headers=auth).json()["uploads"]


def is_upload(request) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/sites/shop/uploads")


def open_and_click(page, base: str, config: dict) -> None:
    """Open the page with ``config`` and click the CTA once it is decided: one rewarded decision."""
    record(page)
    page.goto(route_page(page.context, base, config))
    decided(page, "cta")
    page.click("[data-ma-slot=cta] a")


UPLOADING = {"site": "shop", "key": KEY, "upload": True, "min_events": 1, "interval_s": 1}


def test_a_visitor_uploads_noisy_aggregates_once(seeded, visit):
    """The server's validation is strict (only numbers in a fixed shape, unknown fields
    refused), so an accepted upload holds nothing but the noisy sums. A decision goes up once:
    the next batch holds only what was decided after it."""
    before = uploads(seeded)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    report = httpx.get(f"{seeded}/v1/admin/sites/shop/report", headers=auth).json()
    sent = []  # the bodies the worker POSTed
    visit.context.on("request", lambda r: sent.append(r.post_data_json) if is_upload(r) else None)
    with visit.context.expect_event("requestfinished", is_upload, timeout=60_000):
        open_and_click(visit.page, seeded, {"seed": 1, "sync": UPLOADING})
    assert uploads(seeded) == before + 1
    after = httpx.get(f"{seeded}/v1/admin/sites/shop/report", headers=auth).json()
    assert after["slots"]["cta"]["uploads"] == report["slots"]["cta"]["uploads"] + 1
    # A second decision in the slot, shown once the slot is out of view, and clicked: the
    # upload intervals go by until it is there to send, and then it goes up alone.
    visit.page.evaluate("microadjust.decide('cta')")
    visit.page.evaluate("scrollTo(0, 0)")
    visit.page.wait_for_function("window.__decisions.filter((d) => d.slot === 'cta').length === 2")
    with visit.context.expect_event("requestfinished", is_upload, timeout=60_000):
        visit.page.click("[data-ma-slot=cta] a")
    assert uploads(seeded) == before + 2
    assert len(sent) == 2 and sent[0]["batch_id"] != sent[1]["batch_id"]
    assert sent[1]["events"] == 1, "the first decision went up again"
    assert visit.errors == []


@pytest.mark.parametrize("why", ["gpc", "no consent"])
def test_no_upload_under_gpc_or_without_consent(seeded, browser, visit, why):
    before = uploads(seeded)
    config = {"seed": 2, "sync": UPLOADING}
    if why == "gpc":
        visit.page.add_init_script(
            "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
        )
    else:
        config["consent"] = "required"  # and the visitor never grants it
    open_and_click(visit.page, seeded, config)
    # A visitor who allows uploads comes later and uploads at the first interval after their
    # click; meanwhile this visitor's worker went through several upload intervals.
    control = browser.new_context()
    try:
        with control.expect_event("requestfinished", is_upload, timeout=60_000):
            open_and_click(control.new_page(), seeded, {"seed": 2, "sync": UPLOADING})
    finally:
        control.close()
    assert any(url.endswith("/v1/sites/shop/priors") for url in visit.requests)  # priors: fine
    assert not any(url.endswith("/v1/sites/shop/uploads") for url in visit.requests)
    assert uploads(seeded) == before + 1  # the other visitor's
