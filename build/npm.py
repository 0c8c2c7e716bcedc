"""Pinned npm packages: fetched once with ``npm pack``, accepted only with their sha512 integrity.

The integrity string is the registry's own (``npm view NAME@VERSION dist.integrity``), so a
tarball from a cache, a mirror or a tampered download is refused the same way.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import BuildError, log


@dataclass(frozen=True)
class NpmPackage:
    """One npm package at one version, with the integrity its tarball must have."""

    name: str  # e.g. "pyodide" or "@pyscript/core"
    version: str
    integrity: str  # "sha512-<base64>"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        """The file name ``npm pack`` gives the tarball ("@scope/name" becomes "scope-name")."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    def fetch(self, cache: Path) -> Path:
        """The tarball in ``cache``, packed by npm on first use, checked against the integrity."""
        tarball = cache / self.tarball_name
        if not tarball.exists():
            if shutil.which("npm") is None:
                raise BuildError(
                    "npm is not installed; install Node.js and npm (apt-get install -y npm)"
                    f" to fetch {self.spec}"
                )
            log(f"downloading {self.spec} with npm")
            cache.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                ["npm", "pack", self.spec, "--pack-destination", str(cache), "--silent"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not tarball.exists():
                raise BuildError(
                    f"npm pack {self.spec} failed: {result.stderr.strip()};"
                    " check that the npm registry is reachable (npm ping) and build again"
                )
        algorithm, expected = self.integrity.split("-", 1)
        actual = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            tarball.unlink()
            raise BuildError(
                f"{tarball.name} does not match its pinned npm integrity; it was deleted,"
                " run the build again to download it anew"
            )
        return tarball

    @contextmanager
    def files(self, cache: Path) -> Iterator[Callable[[str], bytes]]:
        """A reader of the verified tarball's files by their path in the package."""
        with tarfile.open(self.fetch(cache)) as tar:

            def read(path: str) -> bytes:
                try:
                    return tar.extractfile(f"package/{path}").read()
                except KeyError:
                    raise BuildError(
                        f"{self.spec} has no {path}; its layout changed, update the build"
                        " for the new version"
                    ) from None

            yield read
