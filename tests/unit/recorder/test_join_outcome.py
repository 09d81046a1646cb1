"""options.join at the end of a job: what the job and recording.finished list, over the real
job store and the in-memory fakes of test_handlers (the join itself: test_recorder_formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.events import RecordingOptions
from shared.jobs import Outcome
from tests.fakes.media import FakeMedia, Take
from tests.unit.recorder.test_handlers import JOB, ROOM, TEMPLATE, World, listed, requested

SEGMENTS = [(f"{ROOM}/{JOB}_{n}.mp4", n) for n in range(3)]
JOINED = (f"{ROOM}/{JOB}_0-joined.mp4", 0)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(root=tmp_path)


def joining(**options: object) -> RecordingOptions:
    return RecordingOptions(output_template=TEMPLATE, join=True, **options)  # type: ignore[arg-type]


async def test_a_joined_file_is_listed_next_to_the_segments(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(), Take(), Take()])
    await world.run(requested(options=joining()))
    doc = await world.job()
    assert doc.state == "SUCCESS"
    assert sorted(listed(doc)) == sorted([*SEGMENTS, JOINED])
    [finished] = world.finished()
    assert sorted(listed(finished)) == sorted([*SEGMENTS, JOINED])
    joined = [f for f in finished.files if f.joined_from]
    assert [(f.path, f.joined_from, f.duration_s) for f in joined] == [(JOINED[0], (0, 1, 2), 6.0)]
    # The segments say they are not joined files; all of them were given to the join.
    assert all(f.joined_from == () for f in finished.files if f.path != JOINED[0])
    assert world.media.joins == [("mp4", [p for p, _ in SEGMENTS])]
    assert world.media.removed == []


async def test_keep_segments_false_leaves_only_the_joined_file(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(), Take(), Take()])
    await world.run(requested(options=joining(keep_segments=False, format="mkv")))
    doc = await world.job()
    assert doc.state == "SUCCESS"
    assert listed(doc) == [(f"{ROOM}/{JOB}_0-joined.mkv", 0)]
    [finished] = world.finished()
    assert [(f.path, f.joined_from) for f in finished.files] == [
        (f"{ROOM}/{JOB}_0-joined.mkv", (0, 1, 2))
    ]
    assert sorted(world.media.removed) == [f"{ROOM}/{JOB}_{n}.mkv" for n in range(3)]


async def test_without_join_nothing_is_joined(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take(), Take()])
    await world.run()
    assert world.media.joins == []
    [finished] = world.finished()
    assert all(f.joined_from == () for f in finished.files)
    assert len(finished.files) == 2


async def test_one_segment_is_not_copied(world: World) -> None:
    world.tiktok.live(ROOM)
    world.media = FakeMedia([Take()])
    await world.run(requested(options=joining()))
    [finished] = world.finished()
    assert [(f.path, f.joined_from) for f in finished.files] == [(SEGMENTS[0][0], ())]
    assert world.media.joins == []


async def test_a_finished_job_is_not_joined_again(world: World) -> None:
    # A redelivery of a job already finished announces it again; it joins nothing more.
    await world.store.finish(JOB, Outcome("SUCCESS", room_id=ROOM))
    await world.run(requested(options=joining()))
    assert world.media.joins == []
    assert len(world.finished()) == 1
