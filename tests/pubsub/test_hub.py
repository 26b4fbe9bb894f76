"""The hub alone: publish, subscribe, history and resume, with no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from uuid import uuid4

import pytest

from sse.errors import EncodeError
from sse.protocol.frame import Frame
from sse.protocol.sse import DecodedEvent, Decoder
from sse.pubsub.hub import Hub, Resume


class Collect:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)


def _data(frames: tuple[Frame, ...] | list[Frame]) -> list[str]:
    decoder = Decoder()
    out: list[str] = []
    for frame in frames:
        out += [e.data for e in decoder.feed(frame.raw) if hasattr(e, "data")]
    return out


def test_publish_pushes_the_same_frame_object_to_every_sink() -> None:
    hub = Hub(history_size=10, epoch="7")
    sinks = [Collect() for _ in range(3)]
    for sink in sinks:
        hub.subscribe("room", uuid4(), sink)
    frame = hub.publish("room", "hi")
    assert all(s.frames == [frame] for s in sinks)
    assert all(s.frames[0] is frame for s in sinks)
    assert frame.raw == b"id: 7-1\ndata: hi\n\n"
    assert frame.chunked == b"12\r\nid: 7-1\ndata: hi\n\n\r\n"  # 18 bytes


def test_topics_are_separate() -> None:
    hub = Hub(history_size=10, epoch="1")
    room, other = Collect(), Collect()
    hub.subscribe("room", uuid4(), room)
    hub.subscribe("other", uuid4(), other)
    hub.publish("room", "a")
    assert (len(room.frames), len(other.frames)) == (1, 0)
    assert hub.last_id("other") == "1-0"


def test_unsubscribed_sink_gets_nothing_more() -> None:
    hub = Hub(history_size=10, epoch="1")
    sink, key = Collect(), uuid4()
    hub.subscribe("room", key, sink)
    hub.publish("room", "a")
    hub.unsubscribe("room", key)
    hub.unsubscribe("room", key)  # twice is harmless
    hub.publish("room", "b")
    assert _data(sink.frames) == ["a"]
    assert hub.sink_count("room") == 0


def test_a_sink_may_unsubscribe_itself_during_a_publish() -> None:
    hub = Hub(history_size=10, epoch="1")
    key = uuid4()

    class Quitter(Collect):
        def push(self, frame: Frame) -> None:
            super().push(frame)
            hub.unsubscribe("room", key)

    quitter, stayer = Quitter(), Collect()
    hub.subscribe("room", key, quitter)
    hub.subscribe("room", uuid4(), stayer)
    hub.publish("room", "a")
    hub.publish("room", "b")
    assert (_data(quitter.frames), _data(stayer.frames)) == (["a"], ["a", "b"])


def test_resume_returns_exactly_the_events_after_the_id() -> None:
    hub = Hub(history_size=10, epoch="e")
    ids = [hub.publish("room", f"m{i}").id for i in range(5)]
    resume = hub.resume("room", ids[1])
    assert resume.gap is None
    assert _data(resume.frames) == ["m2", "m3", "m4"]
    assert hub.resume("room", ids[-1]).frames == ()


def test_resume_from_the_id_before_the_first_event_replays_everything() -> None:
    hub = Hub(history_size=10, epoch="e")
    before = hub.last_id("room")
    hub.publish("room", "first")
    resume = hub.resume("room", before)
    assert resume.gap is None
    assert _data(resume.frames) == ["first"]


def test_id_past_the_history_gets_a_gap_naming_how_many_were_missed() -> None:
    hub = Hub(history_size=3, epoch="e")
    ids = [hub.publish("room", f"m{i}").id for i in range(8)]
    resume = hub.resume("room", ids[0])
    assert resume.gap is not None
    assert _data(resume.frames) == ["m5", "m6", "m7"]
    notice = json.loads(Decoder().feed(resume.gap.raw)[0].data)  # type: ignore[union-attr]
    assert notice["last_event_id"] == ids[0]
    assert "4 were missed" in notice["message"]
    # The notice's id lets a client cut off right after it resume without a new gap.
    assert resume.gap.id == "e-5"
    assert hub.resume("room", resume.gap.id).gap is None


@pytest.mark.parametrize("bad", ["", "garbage", "other-3", "e-", "e-x", "e-99", "e-٣", "e--1"])
def test_foreign_malformed_or_future_ids_get_a_gap_and_all_that_is_kept(bad: str) -> None:
    hub = Hub(history_size=10, epoch="e")
    for i in range(3):
        hub.publish("room", f"m{i}")
    resume = hub.resume("room", bad)
    assert resume.gap is not None
    assert resume.gap.raw.startswith(b"id: e-0\nevent: gap\n")
    assert _data(resume.frames) == ["m0", "m1", "m2"]


def test_an_event_that_cannot_be_encoded_takes_no_id() -> None:
    hub = Hub(history_size=10, epoch="e")
    hub.publish("room", "ok")
    with pytest.raises(EncodeError):
        hub.publish("room", "\ud800")
    with pytest.raises(EncodeError):
        hub.publish("room", "x", event="bad\nname")
    assert hub.publish("room", "next").id == "e-2"


def test_history_is_bounded() -> None:
    hub = Hub(history_size=4, epoch="e")
    for i in range(100):
        hub.publish("room", str(i))
    assert len(hub.resume("room", "e-0").frames) == 4


def test_epoch_must_not_contain_the_separator() -> None:
    with pytest.raises(ValueError, match="epoch"):
        Hub(history_size=1, epoch="a-b")


def test_idle_topics_past_the_cap_are_evicted_least_recently_used_first() -> None:
    hub = Hub(history_size=10, epoch="e", max_topics=2)
    busy = Collect()
    hub.subscribe("a", uuid4(), busy)
    hub.publish("b", "old b")
    hub.publish("c", "c")  # evicts b: a has a subscriber
    assert _data(hub.resume("a", hub.last_id("a")).frames) == []
    assert hub.sink_count("a") == 1
    resume = hub.resume("b", "e-0")  # b lives again, empty: its old events are gone
    assert _data(resume.frames) == []
    assert resume.gap is not None


def test_ids_of_an_evicted_topic_never_resume_its_next_life() -> None:
    hub = Hub(history_size=10, epoch="e", max_topics=1)
    stale = hub.publish("b", "first life").id
    hub.publish("other", "x")  # evicts b
    for i in range(5):
        hub.publish("b", f"second life {i}")  # evicts other
    resume = hub.resume("b", stale)
    assert resume.gap is not None
    assert "unknown" in resume.gap.raw.decode()
    assert _data(resume.frames) == [f"second life {i}" for i in range(5)]


def test_when_every_topic_has_a_subscriber_none_is_evicted() -> None:
    hub = Hub(history_size=10, epoch="e", max_topics=1)
    hub.subscribe("a", uuid4(), Collect())
    hub.subscribe("b", uuid4(), Collect())
    assert (hub.sink_count("a"), hub.sink_count("b")) == (1, 1)


class ManualLoop:
    """Collects what the hub schedules; `run` plays it like the next loop iteration."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], object]] = []

    def schedule(self, callback: Callable[[], object]) -> None:
        self.ready.append(callback)

    def run(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def test_events_published_in_one_iteration_reach_each_sink_as_one_frame() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    sink = Collect()
    hub.subscribe("room", uuid4(), sink)
    for i in range(3):
        hub.publish("room", f"m{i}")
    assert sink.frames == []
    assert len(loop.ready) == 1  # one flush, however many events
    loop.run()
    (frame,) = sink.frames
    assert frame.raw == b"id: e-1\ndata: m0\n\nid: e-2\ndata: m1\n\nid: e-3\ndata: m2\n\n"
    assert frame.chunked == b"%x\r\n%b\r\n" % (len(frame.raw), frame.raw)
    assert _data([frame]) == ["m0", "m1", "m2"]


def test_late_subscribers_share_the_batch_but_get_only_its_tail() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    first, second, third = Collect(), Collect(), Collect()
    hub.subscribe("room", uuid4(), first)
    hub.publish("room", "j1")
    hub.subscribe("room", uuid4(), second)
    hub.publish("room", "j2")
    hub.subscribe("room", uuid4(), third)
    hub.publish("room", "j3")
    assert len(loop.ready) == 1  # one flush for the whole crowd
    loop.run()
    assert _data(first.frames) == ["j1", "j2", "j3"]
    assert _data(second.frames) == ["j2", "j3"]
    assert _data(third.frames) == ["j3"]
    assert all(len(s.frames) == 1 for s in (first, second, third))  # one write each
    hub.publish("room", "next")
    loop.run()
    assert _data(third.frames) == ["j3", "next"]


def test_a_late_subscriber_with_nothing_after_it_gets_nothing() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    early, late = Collect(), Collect()
    hub.subscribe("room", uuid4(), early)
    hub.publish("room", "only")
    key = uuid4()
    hub.subscribe("room", key, late)
    loop.run()
    assert late.frames == []
    hub.unsubscribe("room", key)
    hub.publish("room", "after")
    loop.run()
    assert late.frames == []
    assert _data(early.frames) == ["only", "after"]


def test_a_sink_never_receives_events_published_before_it_subscribed() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    early, late = Collect(), Collect()
    hub.subscribe("room", uuid4(), early)
    hub.publish("room", "before")
    hub.subscribe("room", uuid4(), late)  # same iteration, before the flush
    hub.publish("room", "after")
    loop.run()
    assert _data(early.frames) == ["before", "after"]
    assert _data(late.frames) == ["after"]


def test_resume_includes_events_not_yet_flushed_without_duplicating_them() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    start = hub.last_id("room")
    hub.publish("room", "pending")
    resume = hub.resume("room", start)
    sink = Collect()
    hub.subscribe("room", uuid4(), sink)
    loop.run()
    assert _data(resume.frames) == ["pending"]
    assert sink.frames == []


def test_each_topic_flushes_its_own_batch() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    a, b = Collect(), Collect()
    hub.subscribe("a", uuid4(), a)
    hub.subscribe("b", uuid4(), b)
    hub.publish("a", "a1")
    hub.publish("b", "b1")
    hub.publish("a", "a2")
    loop.run()
    assert (_data(a.frames), _data(b.frames)) == (["a1", "a2"], ["b1"])
    assert hub.take_active() == {"a", "b"}
    assert hub.take_active() == set()


# -- memory: history bounded in bytes, replay capped --------------------------


def _gap_notice(resume: Resume) -> dict[str, str]:
    assert resume.gap is not None
    (event,) = Decoder().feed(resume.gap.raw)
    assert isinstance(event, DecodedEvent)
    assert event.type == "gap"
    notice: dict[str, str] = json.loads(event.data)
    return notice


def test_history_is_bounded_in_bytes_per_channel_oldest_first() -> None:
    # Every frame here is 19 bytes: "id: e-N\ndata: m0N\n\n" with N one digit.
    hub = Hub(history_size=100, epoch="e", history_bytes=70)
    frames = [hub.publish("room", f"m0{i}") for i in range(1, 8)]
    assert {len(f.raw) for f in frames} == {19}
    assert _data(hub.resume("room", frames[3].id).frames) == ["m05", "m06", "m07"]
    assert hub.history_held() == (3, 57)
    resume = hub.resume("room", frames[2].id)  # m04 was dropped for the bound
    assert _gap_notice(resume)["message"].endswith("1 were missed.")
    assert _data(resume.frames) == ["m05", "m06", "m07"]


def test_an_event_larger_than_the_channel_bound_is_not_kept() -> None:
    hub = Hub(history_size=100, epoch="e", history_bytes=30)
    before = hub.publish("room", "small").id
    hub.publish("room", "x" * 40)
    assert hub.history_held() == (0, 0)
    resume = hub.resume("room", before)
    assert _data(resume.frames) == []
    assert resume.gap is not None
    assert resume.gap.id == "e-2"
    assert hub.resume("room", resume.gap.id).gap is None


@pytest.mark.parametrize("listening", [False, True])
def test_total_bytes_evict_the_least_recently_published_channel_first(listening: bool) -> None:
    hub = Hub(history_size=100, epoch="e", history_bytes=100, history_total_bytes=100)
    if listening:  # listeners keep a channel, not its history
        for name in ("a", "b"):
            hub.subscribe(name, uuid4(), Collect())
    a = [hub.publish("a", f"a{i}") for i in range(3)]  # 18 bytes each
    b = [hub.publish("b", f"b{i}") for i in range(2)]
    assert hub.history_held() == (5, 90)
    hub.publish("b", "b2")  # 108 bytes: a, published least recently, gives one up
    assert hub.history_held() == (5, 90)
    assert _data(hub.resume("a", a[0].id).frames) == ["a1", "a2"]
    hub.publish("b", "b3")
    assert _data(hub.resume("a", a[1].id).frames) == ["a2"]
    # The gap is exact: after an evicted id it is told, with how many were missed.
    resume = hub.resume("a", a[0].id)
    assert _gap_notice(resume)["message"].endswith("1 were missed.")
    assert _data(resume.frames) == ["a2"]
    assert resume.gap is not None
    assert hub.resume("a", resume.gap.id).gap is None
    assert _data(hub.resume("b", b[0].id).frames) == ["b1", "b2", "b3"]


def test_a_channel_emptied_by_the_total_bound_still_resumes_exactly_from_its_last_id() -> None:
    hub = Hub(history_size=100, epoch="e", history_bytes=60, history_total_bytes=60)
    last = [hub.publish("a", f"a{i}") for i in range(2)][-1].id
    for i in range(3):
        hub.publish("b", f"b{i}")
    assert hub.history_held() == (3, 54)  # all of them b's: a gave up both
    assert hub.resume("a", last) == Resume(())  # nothing missed, nothing to send
    resume = hub.resume("a", "e-1")
    assert resume.gap is not None
    assert resume.gap.id == "e-2"
    assert _gap_notice(resume)["message"].endswith("1 were missed.")


def test_a_channel_evicted_for_max_topics_gives_back_its_bytes() -> None:
    hub = Hub(history_size=100, epoch="e", max_topics=1)
    hub.publish("a", "x" * 100)
    hub.publish("b", "y")
    assert hub.history_held() == (1, len(b"id: e-2\ndata: y\n\n"))


# Ten frames, m00..m09 with ids e-1..e-10: 19 bytes each, the last 20.
@pytest.mark.parametrize(
    ("after", "max_replay_bytes", "replayed", "gap_id"),
    [
        ("e-8", 1000, ["m08", "m09"], None),  # fits: exact, no gap
        ("e-8", 39, ["m08", "m09"], None),  # exactly fits
        ("e-8", 38, ["m09"], "e-9"),  # one byte short: gap, then the newest that fit
        ("e-0", 58, ["m07", "m08", "m09"], "e-7"),
        ("e-0", 19, [], "e-10"),  # not even the newest fits: the gap alone
        ("bogus", 58, ["m07", "m08", "m09"], "e-7"),  # unknown: the newest that fit
        ("e-99", 39, ["m08", "m09"], "e-8"),
    ],
)
def test_a_resume_replays_at_most_max_replay_bytes_with_a_gap_before_the_newest(
    after: str, max_replay_bytes: int, replayed: list[str], gap_id: str | None
) -> None:
    hub = Hub(history_size=100, epoch="e", max_replay_bytes=max_replay_bytes)
    for i in range(10):
        hub.publish("room", f"m0{i}")
    resume = hub.resume("room", after)
    assert _data(resume.frames) == replayed
    assert sum(len(f.raw) for f in resume.frames) <= max_replay_bytes
    if gap_id is None:
        assert resume.gap is None
        return
    assert resume.gap is not None
    assert resume.gap.id == gap_id
    assert _gap_notice(resume)["last_event_id"] == after
    # Cut off right after the gap, the client resumes from its id without a new one.
    again = hub.resume("room", gap_id)
    assert again.gap is None
    assert _data(again.frames) == replayed


def test_a_capped_resume_says_how_many_were_not_replayed() -> None:
    hub = Hub(history_size=100, epoch="e", max_replay_bytes=40)
    for i in range(5):
        hub.publish("room", f"m0{i}")
    notice = _gap_notice(hub.resume("room", "e-0"))
    assert "40 bytes" in notice["message"]
    assert notice["message"].endswith("3 were missed.")


def test_a_broadcast_has_no_id_and_stays_out_of_the_history() -> None:
    hub = Hub(history_size=10, epoch="e")
    sink = Collect()
    hub.subscribe("room", uuid4(), sink)
    first = hub.publish("room", "kept")
    hub.broadcast("room", '{"who": "ann"}', event="typing")
    assert sink.frames[-1].raw == b'event: typing\ndata: {"who": "ann"}\n\n'
    assert sink.frames[-1].id == ""
    assert hub.last_id("room") == first.id  # no sequence number taken
    resumed = hub.resume("room", "e-0")
    assert _data(resumed.frames) == ["kept"]
    assert resumed.gap is None


def test_a_broadcast_follows_the_events_pending_before_it() -> None:
    loop = ManualLoop()
    hub = Hub(history_size=10, epoch="e", schedule=loop.schedule)
    sink = Collect()
    hub.subscribe("room", uuid4(), sink)
    hub.publish("room", "one")
    hub.broadcast("room", "typing", event="typing")
    hub.publish("room", "two")
    loop.run()
    assert _data(sink.frames) == ["one", "typing", "two"]


def test_a_broadcast_to_a_topic_nobody_follows_creates_nothing() -> None:
    hub = Hub(history_size=10, epoch="e")
    keep = Collect()
    hub.subscribe("busy", uuid4(), keep)
    hub.take_active()
    hub.broadcast("quiet", "x", event="presence")
    assert hub.take_active() == set()
    late = Collect()
    hub.subscribe("quiet", uuid4(), late)
    assert late.frames == []
    with pytest.raises(EncodeError):
        hub.broadcast("busy", "x", event="bad\nname")
    assert keep.frames == []
