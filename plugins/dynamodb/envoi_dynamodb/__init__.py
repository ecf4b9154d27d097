"""envoi-dynamodb: the dynamodb protocol plugin for envoi."""
