"""envoi-grpc: the grpc protocol plugin for envoi."""
