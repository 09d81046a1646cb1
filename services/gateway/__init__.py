"""REST gateway: stateless; serves the API, publishes commands, reads job status from KV."""
