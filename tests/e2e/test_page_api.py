"""The page API as a visitor meets it: markup, rankings, triggers, goals, privacy, SPAs."""

from __future__ import annotations

from .helpers import (
    BELOW_THE_FOLD,
    SLOTS,
    console_drained,
    decided,
    decisions,
    fixture_page,
    layout_shift,
    next_frame,
    open_fixture,
    stored_state,
    wait_for_stored_state,
    warnings_from_the_library,
    worker_caught_up,
)

CUP, BEANS = "/art/cup.svg", "/art/beans.svg"
KINDS = ("text", "image", "link", "class")


def slot_of(kind: str, i: int) -> str:
    """A slot whose only other variant adjusts one thing: content, image, link or class."""
    default, variant = {
        "text": (f"Default {i}", f"<template data-ma-variant='b'>Variant {i}</template>"),
        "image": (
            f"<img src='{CUP}' alt='cup' width='40' height='32'>",
            f"<template data-ma-variant='b' data-ma-src='{BEANS}' data-ma-alt='beans'></template>",
        ),
        "link": (
            f"<a href='/a{i}'>go</a>",
            f"<template data-ma-variant='b' data-ma-href='/b{i}'></template>",
        ),
        "class": (
            "<span>box</span>",
            "<template data-ma-variant='b' data-ma-class='hot big'></template>",
        ),
    }[kind]
    return f"<div data-ma-slot='{kind}{i}' class='box'>{default}{variant}</div>"


def test_variants_of_every_kind_are_applied_as_decided(server, visit):
    body = BELOW_THE_FOLD + "".join(slot_of(kind, i) for kind in KINDS for i in range(4))
    open_fixture(visit, server, fixture_page(body, {"seed": 11}))
    chosen = decided(visit.page, count=16)
    page = visit.page
    for kind in KINDS:
        variants = [chosen[f"{kind}{i}"]["variant"] for i in range(4)]
        assert "b" in variants, f"seed 11 gives every kind a 'b' somewhere: {kind} {variants}"
        for i, variant in enumerate(variants):
            slot = f"[data-ma-slot={kind}{i}]"
            assert page.get_attribute(slot, "data-ma-applied") == variant
            b = variant == "b"
            if kind == "text":
                assert page.inner_text(slot) == (f"Variant {i}" if b else f"Default {i}")
            elif kind == "image":
                img = page.eval_on_selector(f"{slot} img", "(i) => [i.getAttribute('src'), i.alt]")
                assert img == ([BEANS, "beans"] if b else [CUP, "cup"])
            elif kind == "link":
                assert page.get_attribute(f"{slot} a", "href") == (f"/b{i}" if b else f"/a{i}")
            else:
                classes = page.eval_on_selector(slot, "(e) => [...e.classList].sort()")
                assert classes == (["big", "box", "hot"] if b else ["box"])
    assert visit.errors == []


def test_a_ranking_reorders_its_items_in_one_write(server, visit):
    items = "".join(f"<li data-ma-item='{name}'>{name}</li>" for name in "abcde")
    open_fixture(
        visit, server, fixture_page(BELOW_THE_FOLD + f"<ol data-ma-rank='cards'>{items}</ol>")
    )
    ranking = decided(visit.page, "cards")["cards"]
    order = visit.page.eval_on_selector_all(
        "[data-ma-item]", "(i) => i.map((e) => e.dataset.maItem)"
    )
    assert order == ranking["order"] and sorted(order) == list("abcde")
    assert visit.page.get_attribute("[data-ma-rank=cards]", "data-ma-applied") == ",".join(order)


def test_a_slot_in_view_is_not_swapped_until_it_is_out_of_view(server, visit):
    body = (
        "<h1 data-ma-slot='hero' style='min-height: 80px'>Welcome"
        + "".join(f"<template data-ma-variant='v{i}'>Variant {i}</template>" for i in range(6))
        + "</h1>"
        + BELOW_THE_FOLD
        + "<p id='end'>end</p>"
    )
    open_fixture(visit, server, fixture_page(body, {"seed": 5}))
    visit.page.evaluate("window.microadjust.ready")
    visit.page.wait_for_function(  # the worker's decision reached the page
        "window.__received.some((m) => m.type === 'decisions'"
        " && m.decisions.some((d) => d.slot === 'hero'))"
    )
    next_frame(visit.page)
    if "hero" not in decisions(visit):  # decided, but held back while the visitor looks at it
        assert visit.page.inner_text("[data-ma-slot=hero]") == "Welcome"
        assert visit.page.get_attribute("[data-ma-slot=hero]", "data-ma-applied") is None
    visit.page.mouse.wheel(0, 3000)
    hero = decided(visit.page, "hero")["hero"]  # applied once out of view
    applied = visit.page.get_attribute("[data-ma-slot=hero]", "data-ma-applied")
    assert applied == hero["variant"]
    visit.page.mouse.wheel(0, -3000)
    visit.page.wait_for_function("scrollY === 0")
    assert layout_shift(visit.page) == 0


def test_a_trigger_decides_only_once_its_condition_holds(server, visit):
    body = BELOW_THE_FOLD + (
        "<div data-ma-slot='nudge' data-ma-trigger='clicks >= 2' data-ma-live>"
        "<template data-ma-variant='help'>Need help?</template>"
        "<template data-ma-variant='offer'>Free shipping</template></div>"
        "<div data-ma-slot='never' data-ma-trigger='dwell_s > 3600'>"
        "<template data-ma-variant='x'>x</template></div>"
    )
    open_fixture(visit, server, fixture_page(body))
    visit.page.evaluate("window.microadjust.ready")
    worker_caught_up(visit.page, flushes=2, click=False)  # the condition does not hold yet
    assert "nudge" not in decisions(visit)
    visit.page.mouse.click(5, 5)
    visit.page.mouse.click(5, 5)
    nudge = decided(visit.page, "nudge")["nudge"]
    assert visit.page.get_attribute("[data-ma-slot=nudge]", "data-ma-applied") == nudge["variant"]
    assert "never" not in decisions(visit)


def test_goals_teach_the_engine_and_change_later_decisions(server, visit):
    # Two offers; on each the visitor buys only from one version: the bold one on the first,
    # the plain one on the second. Without learning either would be shown about half the time.
    body = (
        "<div data-ma-slot='one' data-ma-manual data-ma-live><p>Plain</p><template"
        " data-ma-variant='bold'><p><button data-ma-goal='buy'>Buy</button></p></template></div>"
        "<div data-ma-slot='two' data-ma-manual data-ma-live><p><button data-ma-goal='buy'>Buy"
        "</button></p><template data-ma-variant='bold'><p>Bold</p></template></div>"
    )
    open_fixture(visit, server, fixture_page(body, {"seed": 3}))
    visit.page.evaluate("window.microadjust.ready")
    shown = {"one": [], "two": []}
    for _ in range(30):
        for slot, buys_on in (("one", "bold"), ("two", "default")):
            variant = visit.page.evaluate(f"microadjust.decide('{slot}')")["variant"]
            shown[slot].append(variant)
            applied = f"[data-ma-slot={slot}][data-ma-applied={variant}]"
            visit.page.wait_for_selector(applied, state="attached")
            if variant == buys_on:
                visit.page.click(f"[data-ma-slot={slot}] [data-ma-goal=buy]")
    assert shown["one"][-20:].count("bold") >= 16, shown["one"]
    assert shown["two"][-20:].count("default") >= 16, shown["two"]
    clicks = shown["one"].count("bold") + shown["two"].count("default")
    assert visit.page.evaluate("microadjust.export()")["device"]["rewards"] == clicks


def test_a_goal_from_javascript_rewards_what_the_visitor_saw(server, visit):
    body = (
        BELOW_THE_FOLD
        + "<div data-ma-slot='promo'>A<template data-ma-variant='b'>B</template></div>"
    )
    open_fixture(visit, server, fixture_page(body))
    visit.page.evaluate("microadjust.on('decision', (d) => window.__seen = d.slot)")
    decided(visit.page, "promo")
    assert visit.page.evaluate("window.__seen") == "promo"
    visit.page.evaluate("microadjust.reward('signup', 5)")  # not seen yet: nothing to reward
    visit.page.mouse.wheel(0, 3000)
    visit.page.wait_for_function(  # half visible for a second: the page reports an impression
        "window.__posted.some((m) => m.type === 'events'"
        " && m.events.some((e) => e.kind === 'impression' && e.slot === 'promo'))"
    )
    visit.page.evaluate("microadjust.reward('signup', 5)")
    # the worker handles messages in order: an export sent after the reward sees it
    assert visit.page.evaluate("microadjust.export()")["device"]["rewards"] == 1
    assert visit.errors == []


FIRST_SHOWN = """new MutationObserver((changes, observer) => {
  const change = changes.find((c) => c.attributeName === 'data-ma-applied');
  if (!change) return;
  window.__firstShown = {applied: change.target.dataset.maApplied,
                         paints: performance.getEntriesByType('paint').length};
  observer.disconnect();
}).observe(document, {attributes: true, subtree: true, attributeFilter: ['data-ma-applied']});"""


def test_a_returning_visitor_sees_a_decision_made_ahead_before_first_paint(server, visit):
    # Without defer, the loader runs before the body is parsed and shows the decision made
    # ahead as the slot is parsed; with defer it does so at DOMContentLoaded (best effort).
    body = (
        "<div data-ma-slot='promo' data-ma-live>A<template data-ma-variant='b'>B</template>"
        "<template data-ma-variant='c'>C</template></div>"
        "<script src='/t/slow.js'></script>" + BELOW_THE_FOLD  # parsing waits for it
    )
    returning = []  # on the second visit, slow.js is answered once the slot shows a variant:
    # a loader that waited for DOMContentLoaded would never get there

    def slow_script(route) -> None:
        if returning:
            visit.page.wait_for_function("window.__firstShown")
        route.fulfill(status=200, content_type="text/javascript", body="window.slow = 1;")

    visit.context.route(server + "/t/slow.js", slow_script)
    open_fixture(visit, server, fixture_page(body, defer=False))
    decided(visit.page, "promo")
    cached = visit.page.wait_for_function(
        "(JSON.parse(localStorage.getItem('microadjust:ahead')) || {}).promo"
    ).json_value()
    visit.page.add_init_script(FIRST_SHOWN)
    returning.append(True)
    visit.page.reload(wait_until="commit")
    first = visit.page.wait_for_function("window.__firstShown").json_value()
    assert first == {"applied": cached["variant"], "paints": 0}
    visit.page.wait_for_function("window.slow === 1")  # the page went on parsing after it


DATABASES = "indexedDB.databases().then((found) => found.map((db) => db.name))"


def test_forget_erases_every_trace_on_the_device(server, visit):
    body = (
        BELOW_THE_FOLD
        + "<div data-ma-slot='promo'>A<template data-ma-variant='b'>B</template></div>"
    )
    open_fixture(visit, server, fixture_page(body))
    decided(visit.page, "promo")
    wait_for_stored_state(visit, "(s) => true", "a stored state")
    visit.page.wait_for_function("localStorage.getItem('microadjust:ahead')")
    assert visit.page.evaluate("microadjust.forget()") is True
    assert "microadjust" not in visit.page.evaluate(DATABASES)  # not even an empty one
    assert (
        visit.page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('microadjust'))")
        == []
    )
    exported = visit.page.evaluate("microadjust.export()")
    assert (
        exported["device"]["engine"]["slots"] == {} and exported["page"]["ahead_decisions"] is None
    )
    visit.page.evaluate("microadjust.decide('promo')")  # a new decision, shown and recorded
    worker_caught_up(visit.page, flushes=2)  # a flush interval exceeds the worker's save delay
    assert "microadjust" not in visit.page.evaluate(DATABASES)  # nothing written again


def test_global_privacy_control_keeps_everything_in_memory(server, visit):
    visit.page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    body = (
        BELOW_THE_FOLD
        + "<div data-ma-slot='promo'>A<template data-ma-variant='b'>B</template></div>"
    )
    open_fixture(visit, server, fixture_page(body))
    decided(visit.page, "promo")
    worker_caught_up(visit.page, flushes=2)  # the decision's display reached the worker
    assert stored_state(visit) is None
    assert visit.page.evaluate("localStorage.length") == 0


def test_with_consent_required_nothing_is_kept_until_it_is_given(server, visit):
    body = (
        BELOW_THE_FOLD
        + "<div data-ma-slot='promo'>A<template data-ma-variant='b'>B</template></div>"
    )
    open_fixture(visit, server, fixture_page(body, {"consent": "required"}))
    decided(visit.page, "promo")
    worker_caught_up(visit.page, flushes=2)  # the decision's display reached the worker
    assert stored_state(visit) is None and visit.page.evaluate("localStorage.length") == 0
    visit.page.evaluate("microadjust.consent(true)")
    stored = wait_for_stored_state(visit, "(s) => true", "the state stored after consent")
    assert stored["visits"] == 1
    assert visit.page.evaluate("localStorage.getItem('microadjust:consent')") == "granted"


def test_single_page_apps_get_new_slots_and_route_changes(server, visit):
    body = BELOW_THE_FOLD + (
        "<main id='app'></main><script>function route() {"
        " history.pushState({}, '', '/t/page.html?next');"
        " document.getElementById('app').innerHTML = \"<div data-ma-slot='late'>Old"
        "<template data-ma-variant='new'>New</template></div>\"; }</script>"
    )
    open_fixture(visit, server, fixture_page(body))
    visit.page.evaluate("window.microadjust.ready")
    visit.page.evaluate("route()")
    late = decided(visit.page, "late")["late"]
    assert visit.page.get_attribute("[data-ma-slot=late]", "data-ma-applied") == late["variant"]
    assert visit.errors == []


def test_malformed_markup_warns_once_per_element_and_keeps_the_page(server, visit):
    body = BELOW_THE_FOLD + (
        "<div data-ma-slot='ok' data-ma-colour='red'>OK"
        "<template data-ma-variant='b'>B</template></div>"
        "<div data-ma-slot='unnamed'>U<template>no name</template>"
        "<template data-ma-variant='x'>X</template></div>"
        "<div data-ma-slot='bad' data-ma-trigger='dwell_s > > 3'>Bad"
        "<template data-ma-variant='x'>X</template></div>"
        "<ul data-ma-rank='empty'><li>no items here</li></ul>"
        "<button data-ma-goal='lost'>Lost</button>"
    )
    open_fixture(visit, server, fixture_page(body))
    visit.page.evaluate("window.microadjust.ready")
    decided(visit.page, "ok")
    warnings_from_the_library(visit, at_least=5)
    worker_caught_up(visit.page, flushes=2, click=False)  # the bad trigger's slot still waits
    console_drained(visit)
    warned = warnings_from_the_library(visit)
    for problem in (
        "data-ma-colour",
        "data-ma-variant name",
        "position 10",
        "needs at least two",
        "outside any slot",
    ):
        assert sum(problem in w for w in warned) == 1, (problem, warned)
    assert len(warned) == 5
    slots = {s["slot"]: s for s in visit.page.evaluate(SLOTS)}
    assert slots["bad"]["text"] == "Bad" and slots["bad"]["applied"] is None
    assert visit.page.inner_text("[data-ma-rank=empty]") == "no items here"
    assert visit.errors == []


def test_slots_named_like_object_properties_and_a_tampered_cache_do_not_break_the_page(
    server, visit
):
    """A ranking named ``constructor``, a slot named ``toString`` and a cache whose entries are
    tampered with (wrong types, repeated names, no event id): the page still boots, decides both
    and throws nothing, and applies no entry of that cache."""
    visit.page.add_init_script(
        """localStorage.setItem('microadjust:ahead', JSON.stringify({
          constructor: {variant: 'b', order: 'b,a', items: ['a', 'b'], probability: 0.5,
                        reason: 'r', expires: 9e15},
          toString: {variant: 'y', variants: ['default', 'y', 'y'], event_id: 'e',
                     probability: 0.5, reason: 'r', expires: 9e15},
          hasOwnProperty: null, valueOf: [1, 2]}))"""
    )
    body = (
        BELOW_THE_FOLD
        + "<ul data-ma-rank='constructor'><li data-ma-item='a'>A</li><li data-ma-item='b'>B</li>"
        + "</ul><div data-ma-slot='toString'>X<template data-ma-variant='y'>Y</template></div>"
    )
    open_fixture(visit, server, fixture_page(body))
    ready = visit.page.evaluate(
        """Promise.race([microadjust.ready.then(() => 'ready', (e) => e.message),
          new Promise((resolve) => setTimeout(() => resolve('ready never settled'), 45000))])"""
    )
    assert ready == "ready"
    chosen = decided(visit.page, "constructor", "toString")
    assert set(chosen) >= {"constructor", "toString"}
    assert not [d for d in visit.page.evaluate("window.__decisions") if d.get("ahead")]
    assert visit.errors == []
