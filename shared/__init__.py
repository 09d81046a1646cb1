"""The project's common package: config, events, subjects, bus, logging, metrics and runtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tiktok-live-recorder-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
