"""Entry point: ``python -m services.indexer``."""

from services.indexer.service import IndexerService
from shared.runtime import main

if __name__ == "__main__":
    main(IndexerService)
