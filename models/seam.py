"""Where a resumed run goes on: the frame after the resume point, found by its timestamp and frame number.

A resumed run (or a time range of a video, :mod:`models.ranges`) seeks to the keyframe before its resume point and
decodes from there; the frames up to the resume point are decoded but dropped, and frame numbers go on from the
resume point's. The resume frame is found exactly, never by a tolerance tied to the frame rate (a recording with
pauses, a 1-hour gap or a 1 fps screen recording has an average rate that says nothing of its frames' spacing):

- by its presentation time, equal to half a time-base unit (two frames' timestamps differ by at least one unit);
- when several frames share that time (duplicate timestamps), by its frame number: its place among them is read from
  the packets' timestamps (:func:`place_among_equal`, a demux pass without decoding, only in that case);
- when the seek lands past the resume frame (a frame shown before the keyframe it is decoded after, or B-frames
  around a gap), the reader seeks again further back (:data:`SEEK_BACK_S`); when that fails too, or frames have no
  timestamp (:attr:`Seam.lost`), it decodes from the start, counting frames up to the resume frame's number.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

SEEK_BACK_S = (0.0, 1.0, 10.0, 100.0)
"""Seconds before the resume frame the reader seeks to, one after the other, until the resume frame is found."""

Decoded = tuple[float | None, Any]
"""A decoded frame with its presentation time in seconds (None: it has no timestamp)."""


def packet_times(path: str | Path, stream: int = 0) -> list[float] | None:
    """Every frame's presentation time in video stream ``stream``, sorted (display order), from the packets.

    None when one has no timestamp.
    """
    import av

    times: list[float] = []
    with av.open(str(path), mode="r") as container:
        st = container.streams.video[stream]
        tb = st.time_base
        if tb is None:
            return None
        start = st.start_time or 0
        for packet in container.demux(st):
            if packet.size == 0:
                continue  # the demuxer's flush packet
            if packet.pts is None:
                return None
            times.append(float((packet.pts - start) * tb))
    times.sort()
    return times


def place_among_equal(times: list[float] | None, index: int, time_s: float, eps: float) -> int | None:
    """How many frames before frame ``index`` share its time ``time_s``; None when the times disagree with it."""
    if times is None or not 0 <= index < len(times) or abs(times[index] - time_s) > eps:
        return None
    n = 0
    while n < index and abs(times[index - n - 1] - time_s) <= eps:
        n += 1
    return n


class Seam:
    """Finds the resume frame among the frames decoded after a seek; hands on the frames after it, numbered.

    Args:
        time_s: The resume frame's time.
        index: Its frame number.
        eps: Half the stream's time-base unit: two times closer than this are the same timestamp.
        place: Returns the resume frame's place among the frames sharing its time (None: unknown); called only when
            several decoded frames share it.
    """

    def __init__(self, time_s: float, index: int, eps: float, place: Callable[[], int | None]) -> None:
        self.time_s = time_s
        self.eps = eps
        self.next_index = index + 1
        self._place = place
        self._group: list[Decoded] = []
        self.found = False
        self.lost = False

    def feed(self, t: float | None, frame: Any) -> Iterator[tuple[int, float | None, Any]]:
        """The frames to analyse once ``frame`` is decoded: none before the seam, numbered ones after it."""
        if self.found:
            yield self._number(t, frame)
            return
        if self.lost:
            return
        if t is None:
            self.lost = True
            return
        if abs(t - self.time_s) <= self.eps:
            self._group.append((t, frame))
            return
        if t < self.time_s:
            if self._group:  # timestamps going back right after the resume frame: after it in decoding order
                yield from self._close()
                yield self._number(t, frame)
            return
        if not self._group:  # past the resume time without having seen it: the seek landed after it
            self.lost = True
            return
        if (yield from self._close()):
            yield self._number(t, frame)

    def end(self) -> Iterator[tuple[int, float | None, Any]]:
        """The frames still held when the stream ends (those sharing the resume frame's time after it)."""
        if not self.found and not self.lost:
            if self._group:
                yield from self._close()
            else:
                self.lost = True  # the resume frame never came: the seek cannot place it

    def _close(self) -> Generator[tuple[int, float | None, Any], None, bool]:
        """The frames of the group after the resume frame; returns whether it was placed."""
        group, self._group = self._group, []
        place = 0 if len(group) == 1 else self._place()
        if place is None or place >= len(group):
            self.lost = True
            return False
        self.found = True
        for t, frame in group[place + 1 :]:
            yield self._number(t, frame)
        return True

    def _number(self, t: float | None, frame: Any) -> tuple[int, float | None, Any]:
        i = self.next_index
        self.next_index += 1
        return i, t, frame
