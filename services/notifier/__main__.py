"""Entry point: ``python -m services.notifier``."""

from services.notifier.service import NotifierService
from shared.runtime import main

if __name__ == "__main__":
    main(NotifierService)
