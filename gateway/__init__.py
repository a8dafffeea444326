"""Everything at the edge: the aiohttp app, auth, settings, the `rally` CLI, connectors."""
