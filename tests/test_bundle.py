"""The bundler: verified sources, the package closure, a reproducible engine wheel."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import tomllib
import zipfile
from pathlib import Path

import bundle  # build/ is on pytest's pythonpath (pyproject.toml)
import common
import npm
import pyscript_core
import pytest

ROOT = Path(__file__).resolve().parent.parent
PINNED = [bundle.PYODIDE_NPM, pyscript_core.PYSCRIPT_NPM]


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
    bundle.build_loader(
        tmp_path, "app-abc/microadjust-0.1.0-py3-none-any.whl", "pyodide-0.27.7-def"
    )
    loader = (tmp_path / "microadjust.js").read_text()
    assert '"worker": "app-abc/worker.js"' in loader and "/*ASSETS*/null" not in loader
    assert '"pyodide": "pyodide-0.27.7-def/"' in loader
    types = (tmp_path / "microadjust.d.ts").read_text()
    assert types == (ROOT / "web" / "microadjust.d.ts").read_text()
    assert "interface Microadjust" in types


def test_the_loader_gets_the_version_of_pyproject_toml(monkeypatch, tmp_path):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    bundle.build_loader(tmp_path, "app-abc/microadjust-0.1.0-py3-none-any.whl", "pyodide-x")
    loader = (tmp_path / "microadjust.js").read_text()
    assert f'const VERSION = "{version}";' in loader and "/*VERSION*/" not in loader
    monkeypatch.setattr(bundle, "project", lambda: {"name": "microadjust", "version": "9.8.7"})
    bundle.build_loader(tmp_path, "app-abc/microadjust-9.8.7-py3-none-any.whl", "pyodide-x")
    assert 'const VERSION = "9.8.7";' in (tmp_path / "microadjust.js").read_text()


def test_a_loader_without_its_markers_is_a_clear_error(monkeypatch, tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "microadjust.js").write_text("const ASSETS = /*ASSETS*/null;")
    monkeypatch.setattr(bundle, "ROOT", tmp_path)
    monkeypatch.setattr(bundle, "project", lambda: {"name": "microadjust", "version": "0.1.0"})
    with pytest.raises(bundle.BuildError, match=r"lost its /\*VERSION\*/null marker"):
        bundle.build_loader(
            tmp_path / "out", "app-abc/microadjust-0.1.0-py3-none-any.whl", "pyodide-x"
        )


@pytest.mark.parametrize("package", PINNED, ids=lambda p: p.name)
def test_a_missing_npm_is_a_clear_error(monkeypatch, tmp_path, package):
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    with pytest.raises(npm.BuildError, match=f"npm is not installed.* to fetch {package.spec}"):
        package.fetch(tmp_path)


@pytest.mark.parametrize("package", PINNED, ids=lambda p: p.name)
def test_a_tampered_tarball_is_deleted_and_reported(tmp_path, package):
    (tmp_path / package.tarball_name).write_bytes(b"not the real tarball")
    with pytest.raises(npm.BuildError, match="does not match its pinned npm integrity"):
        package.fetch(tmp_path)
    assert not (tmp_path / package.tarball_name).exists()


def test_a_verified_tarball_is_read_by_path_and_a_missing_file_is_named(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"console.log(1);"
        info = tarfile.TarInfo("package/dist/core.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(buffer.getvalue()).digest()).decode()
    package = npm.NpmPackage("@scope/demo", "1.2.3", integrity)
    (tmp_path / "scope-demo-1.2.3.tgz").write_bytes(buffer.getvalue())  # as npm pack names it
    with package.files(tmp_path) as read:
        assert read("dist/core.js") == b"console.log(1);"
        with pytest.raises(npm.BuildError, match="@scope/demo@1.2.3 has no dist/core.css"):
            read("dist/core.css")


def test_text_files_and_derived_archives_get_brotli_and_gzip_twins(monkeypatch, tmp_path):
    brotli = pytest.importorskip("brotli")
    monkeypatch.setattr(common, "CACHE", tmp_path / "cache")
    script, archive, wheel = b"console.log('x');" * 200, b"PK stored" * 500, b"PK deflated" * 500
    common.write(tmp_path / "a.js", script)
    common.write(tmp_path / "b.whl", archive, compress=True)
    common.write(tmp_path / "c.whl", wheel)  # an official, already compressed wheel
    assert brotli.decompress((tmp_path / "a.js.br").read_bytes()) == script
    assert gzip.decompress((tmp_path / "a.js.gz").read_bytes()) == script
    assert brotli.decompress((tmp_path / "b.whl.br").read_bytes()) == archive
    assert not (tmp_path / "c.whl.br").exists() and not (tmp_path / "c.whl.gz").exists()


def test_a_content_name_changes_with_any_file_and_only_then():
    files = {"python_stdlib-engine.zip": b"stdlib", "pyodide-lock.json": b"{}"}
    name = bundle.content_name("pyodide-0.27.7", files)
    assert name.startswith("pyodide-0.27.7-") and len(name) == len("pyodide-0.27.7-") + 12
    assert bundle.content_name("pyodide-0.27.7", dict(reversed(files.items()))) == name
    changed = [
        files | {"python_stdlib-engine.zip": b"stdlib, trimmed further"},  # a derived file
        files | {"numpy.whl": b"numpy"},  # a file added
        {"python_stdlib-lazy.zip": b"stdlib", "pyodide-lock.json": b"{}"},  # renamed
        {"pyodide-lock.json": b"{}"},  # removed
    ]
    assert len({bundle.content_name("pyodide-0.27.7", c) for c in changed} | {name}) == 5


def test_the_built_pyodide_directory_is_named_by_its_files_and_the_loader_points_there(built):
    """A browser may keep pyodide-<version>-<hash>/ a year: its name must follow its files."""
    [directory] = (built / "microadjust").glob("pyodide-*")
    files = {
        path.name: path.read_bytes()
        for path in directory.iterdir()
        if path.suffix not in (".br", ".gz") and not path.name.startswith(".")
    }
    assert "python_stdlib-engine.zip" in files and "pyodide.asm.wasm" in files
    assert directory.name == bundle.content_name(f"pyodide-{bundle.PYODIDE_VERSION}", files)
    loader = (built / "microadjust" / "microadjust.js").read_text()
    assert f'"pyodide": "{directory.name}/"' in loader
    assert (
        f"./{directory.name}/pyodide.mjs" in (built / "microadjust" / "pyscript.json").read_text()
    )


def test_the_built_worker_names_the_derived_files_of_its_pyodide_directory(built):
    """The worker fetches numpy without the lock file: what it names must be what ships."""
    [directory] = (built / "microadjust").glob("pyodide-*")
    [worker] = (built / "microadjust").glob("app-*/worker.js")
    derived = json.loads(worker.read_text().split("const DERIVED = ")[1].split(";\n")[0])
    lock = json.loads((directory / "pyodide-lock.json").read_text())["derived"]
    assert set(derived) == set(lock) and {"numpy", "numpy-lazy"} <= set(derived)
    for role, entry in derived.items():
        assert (
            entry["sha256"]
            == lock[role]["sha256"]
            == common.sha256((directory / entry["file_name"]).read_bytes())
        )


def test_a_source_without_its_marker_is_a_clear_error(monkeypatch, tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "worker.js").write_text("const DERIVED = null;")
    monkeypatch.setattr(bundle, "ROOT", tmp_path)
    with pytest.raises(bundle.BuildError, match=r"web/worker.js lost its /\*DERIVED\*/null"):
        bundle.fill_markers("web/worker.js", {"/*DERIVED*/null": {}})
