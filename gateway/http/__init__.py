"""The proxy engine: connections, HTTP/1.1 framing, and the requests lent to aiohttp.

``heads`` is compiled by Cython where the package was built with a C compiler
(``setup.py``); Python then imports the extension in place of the source. With
``GATEWAY_PURE_PYTHON=1`` the source runs even where the extension exists: the
pure-Python build, which ``make test`` runs the suite on too.
"""

import importlib.util
import os
import sys
from pathlib import Path

if os.environ.get("GATEWAY_PURE_PYTHON") and "gateway.http.heads" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "gateway.http.heads", Path(__file__).with_name("heads.py")
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["gateway.http.heads"] = _module
    _spec.loader.exec_module(_module)
