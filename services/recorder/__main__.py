"""Entry point: ``python -m services.recorder``."""

from services.recorder.service import RecorderService
from shared.runtime import main

if __name__ == "__main__":
    main(RecorderService)
