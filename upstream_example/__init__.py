"""A small in-memory backend that stands behind the gateway, for demos and tests."""

from upstream_example.app import create_app

__all__ = ["create_app"]
