"""Chat connectors: IRC (Twitch-style) and WebSocket."""
