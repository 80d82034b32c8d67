"""Build hook of the llmdd Python package: builds libllmdd with cargo and bundles it.

Everything declarative lives in pyproject.toml. This file only adds two
steps to setuptools:

- ``build_py`` runs ``cargo build --lib`` on the crate one directory up (the
  repository root) and copies the ``libllmdd.so`` it produced into the
  package (``llm_datadist/libllmdd.so``). The cargo profile is ``release``
  unless ``LLMDD_CARGO_PROFILE`` says otherwise; ``CARGO`` names the cargo
  binary; ``CARGO_TARGET_DIR`` is honoured, so a build the caller already
  ran is reused rather than repeated.
- ``bdist_wheel`` tags the wheel ``py3-none-<platform>``: it carries a
  native library but no CPython extension (the library is loaded with
  ctypes), so one wheel serves every Python 3 on the platform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CRATE = HERE.parent


def _cargo_build() -> Path:
    """Runs cargo and returns the path of the cdylib it reports."""
    manifest = CRATE / "Cargo.toml"
    if not manifest.is_file():
        raise SystemExit(
            f"llmdd: {manifest} not found; build the package from the llmdd repository (pip install ./python)"
        )
    cargo = os.environ.get("CARGO", "cargo")
    profile = os.environ.get("LLMDD_CARGO_PROFILE", "release")
    cmd = [
        cargo, "build", "--lib", "--profile", profile,
        "--manifest-path", str(manifest), "--message-format=json-render-diagnostics",
    ]
    env = dict(os.environ)
    env["LLMDD_NO_HEADER_UPDATE"] = "1"  # never rewrite include/llmdd.h from a package build
    print(f"llmdd: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, cwd=CRATE, env=env, stdout=subprocess.PIPE, text=True, check=False)
    except FileNotFoundError:
        raise SystemExit(f"llmdd: cargo not found ({cargo!r}); install Rust or set CARGO") from None
    if proc.returncode != 0:
        raise SystemExit(f"llmdd: cargo build failed (exit {proc.returncode})")
    lib = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target", {})
        if msg.get("reason") == "compiler-artifact" and target.get("name") == "llmdd" and "cdylib" in target.get(
            "crate_types", []
        ):
            lib = next((Path(f) for f in msg.get("filenames", []) if f.endswith(".so")), lib)
    if lib is None or not lib.is_file():
        raise SystemExit("llmdd: cargo did not report a libllmdd.so artifact")
    return lib


class BuildPyWithLibrary(build_py):
    """``build_py`` that also bundles libllmdd.so into the package."""

    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            # A stale copy of a removed module must not reach the wheel (pip builds in-tree).
            shutil.rmtree(Path(self.build_lib) / "llm_datadist", ignore_errors=True)
        super().run()
        lib = _cargo_build()
        if getattr(self, "editable_mode", False):
            dest = HERE / "llm_datadist"
        else:
            dest = Path(self.build_lib) / "llm_datadist"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest / "libllmdd.so")
        print(f"llmdd: bundled {lib} -> {dest / 'libllmdd.so'}", file=sys.stderr, flush=True)


class PlatformWheel(bdist_wheel):
    """A platform wheel without an ABI tag (the native part is loaded by ctypes)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
