"""envoi-http: HTTP/1.1 and HTTP/2 for envoi."""
