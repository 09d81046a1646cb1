"""`tlr files get ID -o PATH`: one file downloaded with a progress bar; a partial PATH resumes."""

from __future__ import annotations

import argparse
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tlr.client.api import Client
from tlr.client.output import OK, out, tty


class Bar:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise (logs, pipes)."""

    def __init__(self, label: str) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if tty():
            self._progress = Progress(
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._task = self._progress.add_task(label, total=None)

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, total: int | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)


def get_file(args: argparse.Namespace, client: Client) -> int:
    target = args.output
    with Bar(str(target)) as bar:
        result = client.download(args.file_id, target, progress=bar.update)
    resumed = f", resumed at byte {result.resumed_at}" if result.resumed_at else ""
    out(f"{target}: {result.size} bytes{resumed}")
    return OK
