"""The envoi-dynamodb plugin module (entry point `dynamodb` in group `envoi`).

It is discovered and registered like every plugin; its filters arrive with the dynamodb issue, and
until then it registers no extension.
"""
