"""The proxy engine: connections, HTTP/1.1 framing, and the hand-over to aiohttp."""
