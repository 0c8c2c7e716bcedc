"""The PyScript way: this file runs in a Web Worker (``<script type="py" worker>``).

It imports the same ``microadjust`` engine the script tag uses, ranks each slot's variants
from the page context and applies the choice through PyScript's DOM API, with the script
tag's rules: a slot the visitor is looking at is not swapped (unless it has ``data-ma-live``)
but waits until it is out of view or the page is hidden; an applied slot is marked with
``data-ma-applied`` and announced with a ``microadjust:decision`` event; a click in a slot
rewards the decision shown there. The main thread only forwards the DOM calls: Python never
runs there. If the engine cannot start, the page keeps its default content.
"""

import secrets
import time

import js
from pyscript import document, when, window
from pyscript.ffi import create_proxy, to_js
from pyscript.web import li, page

started = time.perf_counter()
status = page.find("#ma-status")[0]  # pyscript.web wraps the element; attributes go to the DOM
decisions_log = page.find("#ma-log")[0]
shown = {}  # slot name -> the Decision applied there
waiting = {}  # slot name -> (slot, decision, templates) until the slot is out of view


def warn(message):
    window.console.warn(f"microadjust: {message}; the page keeps its default content.")
    status.textContent = "Engine unavailable: the page shows its default content."
    status.dataset.state = "failed"


def referrer_class(referrer):
    if not referrer:
        return "direct"
    host = window.URL.new(referrer).hostname
    if host == window.location.hostname:
        return "internal"
    search = ("google.", "bing.", "duckduckgo.", "yahoo.", "ecosia.", "baidu.", "yandex.")
    return "search" if any(name in host for name in search) else "other"


def page_context():
    """What the script tag sends as context, read from the page through PyScript."""
    width = window.innerWidth
    touch = bool(window.matchMedia("(pointer: coarse)").matches)
    now = time.localtime()
    return {
        "device": "mobile" if width < 768 else "tablet" if width < 1100 and touch else "desktop",
        "viewport_w": width,
        "viewport_h": window.innerHeight,
        "touch": touch,
        "hour": now.tm_hour,
        "weekday": (now.tm_wday + 1) % 7,  # 0 = Sunday, as in JavaScript
        "language": str(window.navigator.language or "")[:2],
        "referrer": referrer_class(document.referrer),
        "page": document.body.dataset.maPage or "other",
    }


def under_the_eyes(slot):
    """True when the visitor can see the slot now: swapping it would be a visible flicker."""
    if document.hidden or slot.hasAttribute("data-ma-live"):
        return False
    box = slot.getBoundingClientRect()
    return box.bottom > 0 and box.top < window.innerHeight


def log(text):
    decisions_log.append(li(text))


def apply(slot, decision, templates):
    """Show the chosen variant: one DOM call swaps the slot's content, templates kept."""
    if decision.action != "default":
        chosen = templates[decision.action].content.cloneNode(True)
        slot.replaceChildren(chosen, *templates.values())
    slot.dataset.maApplied = decision.action
    shown[decision.slot] = decision
    detail = {
        "slot": decision.slot,
        "variant": decision.action,
        "probability": decision.probability,
        "event_id": decision.event_id,
        "reason": decision.reason,
    }
    document.dispatchEvent(
        window.CustomEvent.new("microadjust:decision", to_js({"detail": detail}))
    )


def apply_or_wait(slot, decision, templates):
    note = f"{decision.slot} → {decision.action}  p={decision.probability:.2f}  {decision.reason}"
    if decision.action != "default" and under_the_eyes(slot):
        waiting[decision.slot] = (slot, decision, templates)
        log(note + "  (shown once out of view)")
    else:
        apply(slot, decision, templates)
        log(note)


def apply_waiting(event=None):
    """On scroll or when the page is hidden: apply the decisions whose slot left the view."""
    for name, (slot, decision, templates) in list(waiting.items()):
        if not under_the_eyes(slot):
            del waiting[name]
            apply(slot, decision, templates)


def personalize(engine):
    context = page_context()
    for slot in page.find("[data-ma-slot]"):
        templates = {t.dataset.maVariant: t for t in slot.querySelectorAll(":scope > template")}
        if templates:
            decision = engine.rank(context, ["default", *templates], slot=slot.dataset.maSlot)
            apply_or_wait(slot, decision, templates)


def start():
    try:
        import microadjust
        from microadjust import Engine

        engine = Engine(policy="auto", seed=secrets.randbits(32))  # each visitor explores anew
        personalize(engine)
    except Exception as error:  # a broken engine never breaks the page
        warn(f"the engine could not start ({error!r})")
        return

    recheck = create_proxy(apply_waiting)
    window.addEventListener("scroll", recheck, to_js({"passive": True}))
    document.addEventListener("visibilitychange", recheck)

    @when("click", "[data-ma-slot]")
    def reward(event):
        """A click in a personalized slot rewards the decision shown there, once."""
        # the event reaches the worker after its dispatch: currentTarget is gone, target is not
        name = event.target.closest("[data-ma-slot]").dataset.maSlot
        decision = shown.pop(name, None)
        if decision is not None:
            engine.reward(decision.event_id, 1.0)
            log(f"{name}: reward 1.0 for {decision.event_id}")

    seconds = time.perf_counter() - started
    status.textContent = (
        f"Python worker ready: microadjust {microadjust.__version__}, {len(shown) + len(waiting)}"
        f" slots decided {seconds:.2f} s after this script started."
    )
    status.dataset.pythonThread = js.globalThis.constructor.name  # DedicatedWorkerGlobalScope
    status.dataset.state = "ready"


start()
