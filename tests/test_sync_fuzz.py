"""Property-based fuzzing of the sync API from its own OpenAPI document, which FastAPI generates
from the pydantic models (schemathesis): no request, valid or not, gets a server error, and
every response matches the document.

One default check is left out: ``positive_data_acceptance``. Some rules depend on the server's
configuration, not on the types (counts within ``max_shown``; a local-mode value within its
noise tolerance), so a schema-valid body may rightly get a 422 naming the field."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402
from test_sync_api import ADMIN, KEY  # noqa: E402

from microadjust.server.api import create_app  # noqa: E402
from microadjust.server.config import SyncSettings  # noqa: E402
from microadjust.server.models import SiteDeclaration  # noqa: E402
from microadjust.server.storage import Storage  # noqa: E402

SHOP = SiteDeclaration(  # the example of docs/sync-protocol.md, which the Upload model carries
    key=KEY,
    slots={"cta": ["default", "quiz", "deal", "free-shipping"],
           "headline": ["default", "deal", "story"]},
    cells={"device": ["desktop", "mobile", "tablet"],
           "referrer": ["direct", "search", "social", "internal"], "returning": ["false", "true"]},
)  # fmt: skip
DATA = Path(tempfile.mkdtemp(prefix="microadjust-fuzz-"))
STORE = Storage(data_dir=DATA)
STORE.migrate()
APP = create_app(
    SyncSettings(
        sites={"shop": SHOP},
        admin_token=ADMIN,
        data_dir=DATA,
        publish_interval_s=0.0,
        rate_per_s=1e6,
        rate_burst=10**6,
    ),
    storage=STORE,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_holds_to_its_openapi_document(case):
    headers = {"X-Microadjust-Key": KEY, "Authorization": f"Bearer {ADMIN}"}
    case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])


def test_the_fuzzer_got_past_validation():
    """Runs after the fuzzing above: some generated uploads were valid and stored."""
    assert STORE.upload_count("shop") > 0
