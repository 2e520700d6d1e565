"""Networking: the node shell, its roles and the sessions they drive (the asyncio thread)."""
