"""Poisoning benchmark: does one attacker behind one IP change the published best variants?

Honest visitors (each from its own address) upload their exposures and rewards through the real
sync app (FastAPI, SQLite, in-process); one attacker sends a share of all uploads from a single
address, each the strongest forgery the bounds allow: the maximum reward (``max_shown`` units,
no exposure) on the honestly worst variant of every slot, in the cells it targets. The server
publishes; we count the (slot, cell) pairs whose published best variant (highest
``reward / shown``) is still the honest best. With and without source-bucket capping.

Run: ``.venv/bin/python bench/poison.py [--visitors 2000] [--rho 10000]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "py"))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from microadjust.server.api import create_app  # noqa: E402
from microadjust.server.config import SyncSettings  # noqa: E402
from microadjust.server.limits import RateRule, ServingLimits  # noqa: E402
from microadjust.server.models import SiteDeclaration  # noqa: E402

KEY = "poison-key-123"
CELLS = {"device": ["desktop", "mobile"]}
HONEST_CELLS = ["device=desktop", "device=mobile"]
# true click rates per slot, cell and variant: the best differs by cell
RATES = {
    "cta": {
        "device=desktop": {"default": 0.06, "quiz": 0.15, "deal": 0.02},
        "device=mobile": {"default": 0.05, "quiz": 0.08, "deal": 0.14},
    },
    "headline": {
        "device=desktop": {"default": 0.14, "story": 0.04},
        "device=mobile": {"default": 0.05, "story": 0.09},
    },
}
SITE = SiteDeclaration(
    key=KEY,
    slots={slot: list(next(iter(cells.values()))) for slot, cells in RATES.items()},
    cells=CELLS,
)
SIM_CLIENT = b"x-sim-client"
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None  # no fsync wait in a simulation


def with_simulated_clients(app: ASGIApp) -> ASGIApp:
    """The client address of each request from its ``X-Sim-Client`` header (simulation only)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == SIM_CLIENT:
                    scope = {**scope, "client": (value.decode(), 50000)}
        await app(scope, receive, send)

    return wrapped


def honest_best(slot: str, cell: str) -> str:
    if cell == "*":
        variants = RATES[slot][HONEST_CELLS[0]]
        mean = {v: np.mean([RATES[slot][c][v] for c in HONEST_CELLS]) for v in variants}
        return max(mean, key=mean.get)
    return max(RATES[slot][cell], key=RATES[slot][cell].get)


def honest_worst(slot: str, cell: str) -> str:
    return min(RATES[slot][cell], key=RATES[slot][cell].get)


def honest_upload(rng: np.random.Generator, max_shown: int) -> dict:
    """One visitor: ``max_shown`` exposures per slot, uniformly over the variants, clicks drawn."""
    cell = HONEST_CELLS[rng.integers(len(HONEST_CELLS))]
    slots = {}
    for slot, cells in RATES.items():
        rates = cells[cell]
        variants: dict[str, dict[str, int]] = {}
        for variant in rng.choice(list(rates), size=max_shown):
            counts = variants.setdefault(str(variant), {"shown": 0, "reward": 0})
            counts["shown"] += 1
            counts["reward"] += int(rng.random() < rates[variant])
        slots[slot] = {"cell": cell, "variants": variants}
    return {"v": 2, "batch_id": uuid.uuid4().hex, "slots": slots}


def forged_upload(target: str, max_shown: int) -> dict:
    """The strongest forgery within the bounds: all reward, no exposure, on the worst variant."""
    slots = {
        slot: {
            "cell": target,
            "variants": {honest_worst(slot, target): {"shown": 0, "reward": max_shown}},
        }
        for slot in RATES
    }
    return {"v": 2, "batch_id": uuid.uuid4().hex, "slots": slots}


@dataclass(frozen=True)
class Outcome:
    honest: int  # (slot, cell) pairs whose published best is the honest best
    total: int

    @property
    def share(self) -> float:
        return self.honest / self.total


def simulate(
    forged_share: float,
    *,
    visitors: int = 2000,
    bucket_cap: float = 8.0,
    rho: float = 1e4,
    concentrated: bool = False,
    seed: int = 0,
) -> Outcome:
    """Publish once after ``visitors`` honest uploads and the forged share of all uploads."""
    rng = np.random.default_rng(seed)
    forged = round(visitors * forged_share / (1.0 - forged_share))
    settings = SyncSettings(
        sites={"shop": SITE},
        admin_token="poison-admin-token-0123",
        data_dir=Path(tempfile.mkdtemp(prefix="microadjust-poison-", dir=SCRATCH)),
        publish_interval_s=0.0,
        rate_per_s=1e9,
        rate_burst=10**9,
        limits=ServingLimits(upload_per_ip=RateRule(1e9, 10**9)),  # source capping is measured
        bucket_cap=bucket_cap,
        rho_per_release=rho,
    )
    app = with_simulated_clients(create_app(settings, rng=np.random.default_rng(seed)))
    bound = settings.max_shown
    uploads = [(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", honest_upload(rng, bound))
               for i in range(visitors)]  # fmt: skip
    for k in range(forged):
        target = HONEST_CELLS[0] if concentrated else HONEST_CELLS[k % len(HONEST_CELLS)]
        uploads.append(("203.0.113.66", forged_upload(target, bound)))
    order = rng.permutation(len(uploads))
    with TestClient(app) as client:
        for index in order:
            address, body = uploads[index]
            response = client.post(
                "/v1/sites/shop/uploads",
                json=body,
                headers={"X-Microadjust-Key": KEY, "X-Sim-Client": address},
            )
            assert response.status_code == 200 and not response.json()["refused"], response.text
        published = client.get("/v1/sites/shop/priors").json()
    honest = total = 0
    for slot, entry in published["slots"].items():
        for cell in ["*", *HONEST_CELLS]:
            counts = entry["cells"].get(cell, {})
            rates = {v: c["reward"] / c["shown"] for v, c in counts.items() if c["shown"] >= 1}
            total += 1
            honest += bool(rates) and max(rates, key=rates.get) == honest_best(slot, cell)
    return Outcome(honest, total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=2000, help="honest uploads (default 2000)")
    parser.add_argument(
        "--rho", type=float, default=1e4,
        help="zCDP per publication (default 1e4: no noise, robustness alone)",
    )  # fmt: skip
    args = parser.parse_args()
    print(f"{args.visitors} honest visitors, one attacker on one IP; share of (slot, cell) pairs "
          "whose published best variant stays the honest one:")  # fmt: skip
    print("| forged uploads | capped (bucket_cap 8), spread | capped, one cell | no cap |")
    print("|---|---|---|---|")
    for share in (0.01, 0.05, 0.10):
        spread = simulate(share, visitors=args.visitors, rho=args.rho)
        focused = simulate(share, visitors=args.visitors, rho=args.rho, concentrated=True)
        uncapped = simulate(share, visitors=args.visitors, rho=args.rho, bucket_cap=float("inf"))
        cells = [f"{o.share:.0%} ({o.honest}/{o.total})" for o in (spread, focused, uncapped)]
        print(f"| {share:.0%} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
