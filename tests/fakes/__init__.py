"""In-memory stand-ins for the services' adapters, for handler unit tests (no servers).

Each fake that stands for a real adapter passes the same contract test as that adapter.
"""
