"""Entry point: ``python -m services.scheduler``."""

from services.scheduler.service import SchedulerService
from shared.runtime import main

if __name__ == "__main__":
    main(SchedulerService)
