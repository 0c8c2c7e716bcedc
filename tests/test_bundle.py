"""The bundler: verified sources, the package closure, a reproducible engine wheel."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bundle", ROOT / "build" / "bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


def test_a_file_is_accepted_only_when_its_sha256_matches(monkeypatch):
    good = b"the official wheel"
    monkeypatch.setattr(bundle, "CACHE", Path("/nonexistent-cache"))
    monkeypatch.setattr(
        bundle,
        "SOURCES",
        [("tampered mirror", lambda name: b"evil"), ("empty mirror", lambda name: None)],
    )
    with pytest.raises(bundle.BuildError) as error:
        bundle.fetch_verified("numpy.whl", hashlib.sha256(good).hexdigest())
    message = str(error.value)
    assert "numpy.whl" in message and "tampered mirror: sha256" in message
    assert "empty mirror: not found" in message and "build again" in message


def test_the_first_matching_source_wins_and_is_cached(monkeypatch, tmp_path):
    good = b"the official wheel"
    monkeypatch.setattr(bundle, "CACHE", tmp_path)
    monkeypatch.setattr(
        bundle, "SOURCES", [("bad", lambda name: b"evil"), ("good", lambda name: good)]
    )
    assert bundle.fetch_verified("x.whl", hashlib.sha256(good).hexdigest()) == good
    assert (tmp_path / "wheels" / "x.whl").read_bytes() == good


def test_the_closure_follows_the_lock_dependencies():
    lock = {
        "packages": {
            "scikit-learn": {"depends": ["scipy", "joblib"]},
            "scipy": {"depends": ["numpy", "openblas"]},
            "numpy": {"depends": []},
            "openblas": {"depends": []},
            "joblib": {"depends": []},
        }
    }
    assert bundle.package_closure(lock, ["scikit-learn"]) == [
        "joblib",
        "numpy",
        "openblas",
        "scikit-learn",
        "scipy",
    ]


def test_the_engine_wheel_is_reproducible_and_leaves_the_server_out():
    name, first = bundle.engine_wheel()
    assert name == "microadjust-0.1.0-py3-none-any.whl"
    assert bundle.engine_wheel()[1] == first
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "microadjust/browser/session.py" in names
    assert "microadjust-0.1.0.dist-info/RECORD" in names
    assert not [n for n in names if n.startswith("microadjust/server/")]


def test_the_loader_gets_content_named_asset_paths(tmp_path):
    bundle.build_loader(tmp_path, "app-abc/microadjust-0.1.0-py3-none-any.whl")
    loader = (tmp_path / "microadjust.js").read_text()
    assert '"worker": "app-abc/worker.js"' in loader and "/*ASSETS*/null" not in loader
    assert '"pyodide": "pyodide-0.27.7/"' in loader


def test_a_missing_npm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(bundle, "CACHE", tmp_path)
    monkeypatch.setattr(bundle.shutil, "which", lambda name: None)
    with pytest.raises(bundle.BuildError, match="npm is not installed"):
        bundle.npm_tarball()


def test_a_tampered_tarball_is_deleted_and_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(bundle, "CACHE", tmp_path)
    (tmp_path / f"pyodide-{bundle.PYODIDE_VERSION}.tgz").write_bytes(b"not the real tarball")
    with pytest.raises(bundle.BuildError, match="does not match its pinned npm integrity"):
        bundle.npm_tarball()
    assert not (tmp_path / f"pyodide-{bundle.PYODIDE_VERSION}.tgz").exists()


def test_text_files_and_derived_archives_get_brotli_and_gzip_twins(monkeypatch, tmp_path):
    brotli = pytest.importorskip("brotli")
    monkeypatch.setattr(bundle, "CACHE", tmp_path / "cache")
    script, archive, wheel = b"console.log('x');" * 200, b"PK stored" * 500, b"PK deflated" * 500
    bundle.write(tmp_path / "a.js", script)
    bundle.write(tmp_path / "b.whl", archive, compress=True)
    bundle.write(tmp_path / "c.whl", wheel)  # an official, already compressed wheel
    assert brotli.decompress((tmp_path / "a.js.br").read_bytes()) == script
    assert bundle.gzip.decompress((tmp_path / "a.js.gz").read_bytes()) == script
    assert brotli.decompress((tmp_path / "b.whl.br").read_bytes()) == archive
    assert not (tmp_path / "c.whl.br").exists() and not (tmp_path / "c.whl.gz").exists()
