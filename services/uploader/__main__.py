"""Entry point: ``python -m services.uploader``."""

from services.uploader.service import UploaderService
from shared.runtime import main

if __name__ == "__main__":
    main(UploaderService)
