"""A stand-in for the upstream tiktok-live-recorder CLI (src/main.py) and the sitecustomize
that points it, or the real one, at the fake TikTok (site/)."""
