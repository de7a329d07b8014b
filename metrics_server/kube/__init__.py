"""Kubernetes mode: the API-server-backed store, status writer, leader election and wiring."""
