"""The proxy engine: connections, HTTP/1.1 framing, and the requests lent to aiohttp."""
