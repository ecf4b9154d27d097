"""Example third-party HTTP filters for envoi (see plugin.py)."""
