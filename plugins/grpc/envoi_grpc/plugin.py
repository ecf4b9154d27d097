"""The envoi-grpc plugin module (entry point `grpc` in group `envoi`).

It is discovered and registered like every plugin; its filters arrive with the grpc issue, and
until then it registers no extension.
"""
