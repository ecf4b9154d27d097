"""A template for third-party envoi filters."""
