"""For the CLI under test (the stand-in or the real upstream): requests on tiktok.com (or a
subdomain) go to the fake TikTok at $TLR_FAKE_TIKTOK_BASE, scheme and host replaced, path and
query kept; every other host is left alone. requests' and curl_cffi's Session.request are
wrapped when (and only if) the CLI imports them. Network redirection only: the CLI's own
code runs untouched. bench/upstream_compare.py gives it to the upstream too.
"""

import importlib.abc
import os
import sys
from urllib.parse import urlsplit, urlunsplit

_BASE = urlsplit(os.environ["TLR_FAKE_TIKTOK_BASE"])
_PATCH = {"requests.sessions": "Session", "curl_cffi.requests.session": "Session"}


def _rewrite(url):
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "tiktok.com" or host.endswith(".tiktok.com"):
        return urlunsplit((_BASE.scheme, _BASE.netloc, parts.path, parts.query, parts.fragment))
    return url


def _wrap(cls):
    original = cls.request

    def request(self, method, url, *args, **kwargs):
        return original(self, method, _rewrite(url), *args, **kwargs)

    cls.request = request


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _PATCH:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _wrap(getattr(module, _PATCH[name]))

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
