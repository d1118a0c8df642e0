"""What aiohttp serves for the gateway itself: its middleware and method dispatch, and the
login, consent and dashboard pages."""
