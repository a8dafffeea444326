"""HTTP routes, one module per area; gateway/app.py wires them."""
