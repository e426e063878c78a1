"""Benchmarks of atrepo beside peer AT Protocol libraries (run with ``python -m bench``)."""
