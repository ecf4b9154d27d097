"""The envoi-http plugin module (entry point ``http`` in group ``envoi``)."""
