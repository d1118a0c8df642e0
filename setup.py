"""The compiled hot path: ``gateway/http/heads.py`` built by Cython into an extension of
the same name, which Python imports in place of the source.

The build is optional: without a C compiler (or with ``GATEWAY_PURE_PYTHON=1``) the
package installs as plain Python and runs the same source. Everything else about the
package is in ``pyproject.toml``.
"""

import os

from setuptools import Extension, setup

COMPILED = ["gateway/http/heads.py"]


def extensions() -> list[Extension]:
    if os.environ.get("GATEWAY_PURE_PYTHON"):
        return []
    from Cython.Build import cythonize

    modules = [
        Extension(path[:-3].replace("/", "."), [path], optional=True)  # no compiler: skipped
        for path in COMPILED
    ]
    return cythonize(modules, language_level=3, quiet=True)


setup(ext_modules=extensions())
