"""The snapshot layout's names: every name a formatter makes parses back to what made it, and a
parser given any other text (names come from a folder others can write) refuses it with
SnapshotError, never another exception."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mfcolab.errors import SnapshotError
from mfcolab.files import temp_name
from mfcolab.replica import layout

quick = settings(deadline=None, max_examples=300, derandomize=True)  # the same examples on every run: CI does not fail by chance
LAST_MILLISECOND = 253402300799999  # 9999-12-31T23:59:59.999Z: a four-digit year
segment_sizes = st.integers(min_value=20, max_value=30).map(lambda bits: 2**bits)
timelines = st.integers(min_value=1, max_value=2**32 - 1)

hostile_text = st.one_of(
    st.text(),
    st.text(alphabet="0123456789ABCDEFabcdefTZ-/.x \n\x00٣"),
    st.sampled_from(["", ".", "..", "../x", "/", "\n", "0" * 24 + "\n", "F" * 24, "1/2/3", "/1", "1/", "-1/2",
                     "99999999T999999999Z-abcd", "20261399T256199000Z-abcd", "٣" * 24, "0000000100000000FFFFFFFF"]),
)


@quick
# Not the very last millisecond: a float near 2.5e11 s cannot hold a fraction of it, and rounds into year 10000.
@given(millis=st.integers(min_value=0, max_value=LAST_MILLISECOND - 1), fraction=st.floats(min_value=0, max_value=0.999))
def test_layout_generation_name_parses_back_to_its_millisecond(millis: int, fraction: float) -> None:
    created = (millis + fraction) / 1000
    name = layout.format_generation(created)
    assert layout.is_generation(name)
    assert round(layout.parse_generation(name) * 1000) == int(created * 1000)


@quick
@given(first=st.integers(min_value=0, max_value=LAST_MILLISECOND - 1), gap=st.integers(min_value=1, max_value=10**9))
def test_layout_generation_names_sort_in_creation_order(first: int, gap: int) -> None:
    second = min(first + gap, LAST_MILLISECOND)
    older, newer = layout.format_generation(first / 1000), layout.format_generation(second / 1000)
    assert older.split("Z-")[0] < newer.split("Z-")[0]


def test_layout_generation_name_of_now_reads_as_now() -> None:
    now = time.time()
    assert abs(layout.parse_generation(layout.format_generation(now)) - now) < 0.002


@quick
@given(timeline=timelines, segment_size=segment_sizes, data=st.data())
def test_layout_segment_name_parses_back(timeline: int, segment_size: int, data: st.DataObject) -> None:
    segno = data.draw(st.integers(min_value=0, max_value=2**32 * layout.segments_per_id(segment_size) - 1))
    name = layout.format_segment(timeline, segno, segment_size)
    assert layout.is_segment(name) and not layout.is_temp(layout.wal_piece(name))
    assert layout.parse_segment(name, segment_size) == (timeline, segno)


@quick
@given(timeline=timelines)
def test_layout_history_name_parses_back(timeline: int) -> None:
    name = layout.format_history(timeline)
    assert layout.is_history(name) and not layout.is_segment(name)
    assert layout.history_timeline(name) == timeline


@quick
@given(lsn=st.integers(min_value=0, max_value=2**64 - 1))
def test_layout_lsn_parses_back(lsn: int) -> None:
    assert layout.parse_lsn(layout.format_lsn(lsn)) == lsn


def refuses_or_parses(parse: Callable[[], object]) -> None:
    try:
        parse()
    except SnapshotError as exc:
        assert exc.message


@quick
@given(name=hostile_text, segment_size=segment_sizes)
@example(name="99999999T999999999Z-abcd", segment_size=2**20)
@example(name="0" * 24 + "\n", segment_size=2**20)
@example(name="1/2/3", segment_size=2**20)
def test_layout_parsers_refuse_hostile_names_without_crashing(name: str, segment_size: int) -> None:
    refuses_or_parses(lambda: layout.parse_generation(name))
    refuses_or_parses(lambda: layout.parse_segment(name, segment_size))
    refuses_or_parses(lambda: layout.history_timeline(name))
    refuses_or_parses(lambda: layout.parse_lsn(name))
    layout.is_temp(name)
    layout.is_plain_name(name)


@quick
@given(name=hostile_text, segment_size=segment_sizes)
def test_layout_accepted_names_are_the_formatters_own(name: str, segment_size: int) -> None:
    """Whatever a parser accepts, its formatter writes back character for character."""
    try:
        timeline, segno = layout.parse_segment(name, segment_size)
    except SnapshotError:
        pass
    else:
        assert layout.format_segment(timeline, segno, segment_size) == name
    try:
        layout.history_timeline(name)
    except SnapshotError:
        pass
    else:
        assert layout.format_history(layout.history_timeline(name)) == name


@pytest.mark.parametrize("name", [
    "99999999T999999999Z-abcd",  # no such date: strptime's ValueError used to escape
    "20260101T000000000Z-ABCD",  # the tag is lower-case hex
    "20260101T000000000Z-abcd\n",
    "٢٠٢٦٠١٠١T000000000Z-abcd",  # digits, but not ASCII ones
    "../20260101T000000000Z-abcd",
])
def test_layout_parse_generation_refuses_near_misses(name: str) -> None:
    with pytest.raises(SnapshotError, match="is not a generation name"):
        layout.parse_generation(name)


@pytest.mark.parametrize("name", ["000000010000000000000001\n", "0000000100000000FFFFFFFF", "00000001000000000000000g"])
def test_layout_parse_segment_refuses_near_misses(name: str) -> None:
    with pytest.raises(SnapshotError, match="is not a WAL segment name"):
        layout.parse_segment(name, 2**20)
    assert not layout.is_segment(name) or name == "0000000100000000FFFFFFFF"


def test_layout_temporary_names_are_recognised_and_pieces_are_not(tmp_path: Path) -> None:
    piece = tmp_path / layout.wal_piece("000000010000000000000001")
    assert layout.is_temp(temp_name(piece).name)
    assert layout.is_temp(".000000010000000000000001.gz.Ab12Z9")  # rsync's
    for name in (piece.name, layout.partial_piece("000000010000000000000001"), layout.MANIFEST, layout.GENERATION_RECORD):
        assert not layout.is_temp(name) and layout.is_plain_name(name)
