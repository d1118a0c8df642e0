"""The compiled hot path: ``gateway/http/heads.py`` built by Cython into an extension of
the same name, which Python imports in place of the source.

The build is optional: where the C compiler fails or is missing (or with
``GATEWAY_PURE_PYTHON=1``) the package installs as plain Python and runs the same
source. Everything else about the package is in ``pyproject.toml``.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED = ["gateway/http/heads.py"]


class OptionalBuildExt(build_ext):
    """An extension that does not build is left out, with a warning: its source runs."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # no compiler, no Python headers, a failed compile
            self.warn(f"{ext.name} is not compiled ({exc}); it runs as plain Python")


def extensions() -> list[Extension]:
    if os.environ.get("GATEWAY_PURE_PYTHON"):
        return []
    from Cython.Build import cythonize

    modules = [Extension(path[:-3].replace("/", "."), [path]) for path in COMPILED]
    return cythonize(modules, language_level=3, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
