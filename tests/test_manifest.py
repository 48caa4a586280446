"""The manifest: what is written reads back the same; a manifest cut short or changed by another
writer of the root folder is refused with SnapshotError naming what is wrong (and `load_manifest`
then rebuilds one from the generation records), never another exception."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from mfcolab.errors import SnapshotError
from mfcolab.replica import layout
from mfcolab.replica.manifest import FORMAT, Generation, Manifest, WalRange, load_manifest, read_manifest, write_manifest

quick = settings(deadline=None, max_examples=150, derandomize=True)  # the same examples on every run: CI does not fail by chance

system_ids = st.integers(min_value=0, max_value=2**64 - 1).map(str)
timelines = st.integers(min_value=1, max_value=2**32 - 1)
segment_sizes = st.integers(min_value=20, max_value=30).map(lambda bits: 2**bits)
sizes = st.integers(min_value=0, max_value=2**40)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
lsns = st.integers(min_value=0, max_value=2**64 - 1).map(layout.format_lsn)
piece_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.0123456789-", min_size=1, max_size=30).filter(layout.is_plain_name)

generations = st.builds(
    Generation,
    id=st.integers(min_value=0, max_value=253402300799).map(layout.format_generation),
    system_identifier=system_ids, timeline=timelines, segment_size=segment_sizes, start_lsn=lsns, end_lsn=lsns,
    start_segment=st.integers(min_value=0, max_value=2**40), files=st.dictionaries(piece_names, sizes, max_size=4),
    created=times, wal_bytes=sizes,
)


@st.composite
def wal_ranges(draw: st.DrawFn) -> WalRange:
    first = draw(st.integers(min_value=0, max_value=2**40))
    last = first - 1 + draw(st.integers(min_value=0, max_value=10**6))
    partial = draw(st.sampled_from([None, last + 1]))
    return WalRange(draw(system_ids), draw(timelines), draw(segment_sizes), first, last, draw(sizes), draw(times),
                    partial, draw(sizes))


histories = st.tuples(system_ids, timelines).map(lambda pair: f"{pair[0]}/{layout.format_history(pair[1])}")
manifests = st.builds(Manifest, generations=st.lists(generations, max_size=4), wal=st.lists(wal_ranges(), max_size=4),
                      history=st.lists(histories, max_size=3), updated=times)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One folder for every generated example (hypothesis runs many per test function)."""
    with tempfile.TemporaryDirectory(prefix="manifest-") as name:
        yield Path(name)


@quick
@given(manifest=manifests)
def test_manifest_written_reads_back_the_same(folder: Path, manifest: Manifest) -> None:
    path = folder / layout.MANIFEST
    written = write_manifest(path, manifest)
    assert written == path.stat().st_size
    assert read_manifest(path) == manifest
    assert manifest.copy() == manifest and manifest.copy() is not manifest


@quick
@given(manifest=manifests, data=st.data())
def test_manifest_cut_short_is_refused(folder: Path, manifest: Manifest, data: st.DataObject) -> None:
    path = folder / layout.MANIFEST
    write_manifest(path, manifest)
    whole = path.read_bytes()
    path.write_bytes(whole[:data.draw(st.integers(min_value=0, max_value=len(whole) - 1))])
    with pytest.raises(SnapshotError, match="is not a manifest"):
        read_manifest(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document a value sits (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield prefix + (key,)
            yield from paths_in(inner, prefix + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield prefix + (index,)
            yield from paths_in(inner, prefix + (index,))


def replaced(document: Any, where: tuple[Any, ...], value: Any) -> Any:
    if not where:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[where[0]] = replaced(document[where[0]] if len(where) > 1 else None, where[1:], value)
    return copy


@quick
@given(manifest=manifests.filter(lambda m: m.generations or m.wal or m.history), data=st.data())
def test_manifest_with_a_value_changed_is_refused_or_still_a_valid_manifest(folder: Path, manifest: Manifest, data: st.DataObject) -> None:
    document = manifest.to_json()
    where = data.draw(st.sampled_from(list(paths_in(document))))
    tampered = replaced(document, where, data.draw(json_values))
    path = folder / layout.MANIFEST
    path.write_text(json.dumps(tampered))
    try:
        read = read_manifest(path)
    except SnapshotError as exc:
        assert str(path) in exc.message and exc.hint
        return
    # Accepted: then it is one that could have been written, and it writes back the same.
    write_manifest(path, read)
    assert read_manifest(path) == read
    for generation in read.generations:
        assert layout.is_generation(generation.id)
        assert all(layout.is_plain_name(name) for name in generation.files)


def one_generation_document() -> dict[str, Any]:
    generation = Generation("20261129T231500123Z-0a1b", "7440000000000000001", 1, 2**20, "0/2000028", "0/2000100", 2,
                            {"base.tar.gz": 10, "pg_wal.tar.gz": 5}, 1764458100.123)
    wal = WalRange(generation.system_identifier, 1, 2**20, 2, 7, partial=8)
    return Manifest([generation], [wal], [f"{generation.system_identifier}/00000002.history"], 1.0).to_json()


@pytest.mark.parametrize(("where", "value", "says"), [
    (("generations", 0, "id"), "../../etc", "is not a generation name"),
    (("generations", 0, "files"), {"../../base.tar.gz": 10}, "names a piece"),
    (("generations", 0, "files"), {".hidden": 10}, "names a piece"),
    (("generations", 0, "system_identifier"), "../wal", "names the database"),
    (("generations", 0, "timeline"), "1", "not a whole number"),
    (("generations", 0, "timeline"), True, "not a whole number"),
    (("generations", 0, "timeline"), 0, "is on timeline 0"),
    (("generations", 0, "segment_size"), 1000, "WAL segments of 1000 bytes"),
    (("generations", 0, "start_lsn"), "0/2/3", "is not a WAL location"),
    (("generations", 0, "start_lsn"), "", "is not a WAL location"),
    (("generations", 0, "created"), "yesterday", "not a number"),
    (("generations", 0, "start_segment"), -1, "negative"),
    (("generations", 0, "extra"), 1, "unknown fields"),
    (("wal", 0, "last"), 0, "runs from 2 to 0"),
    (("wal", 0, "partial"), 12, "unfinished segment 12 after 7"),
    (("history", 0), "7440000000000000001/../../x.history", "is not <database>/<timeline>.history"),
    (("generations",), {"id": "x"}, "generations is dict, not list"),
    (("format",), 2, "unknown snapshot manifest format 2"),
    (("surprise",), [], "unknown fields"),
])
def test_manifest_tampered_is_refused_naming_what(tmp_path: Path, where: tuple[Any, ...], value: Any, says: str) -> None:
    path = tmp_path / layout.MANIFEST
    path.write_text(json.dumps(replaced(one_generation_document(), where, value)))
    with pytest.raises(SnapshotError) as caught:
        read_manifest(path)
    assert says in caught.value.message and str(path) in caught.value.message and caught.value.hint


def test_manifest_untouched_document_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / layout.MANIFEST
    path.write_text(json.dumps(one_generation_document()))
    assert read_manifest(path).to_json() == one_generation_document()


def test_load_manifest_rebuilds_from_the_records_when_the_manifest_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    document = one_generation_document()
    record = document["generations"][0]
    folder = layout.base_dir(settings, record["id"])
    folder.mkdir(parents=True)
    for name, size in record["files"].items():
        (folder / name).write_bytes(b"x" * size)
    (folder / layout.GENERATION_RECORD).write_text(json.dumps(record))
    hostile = layout.base_dir(settings, "20261129T231500999Z-ffff")
    hostile.mkdir(parents=True)
    (hostile / layout.GENERATION_RECORD).write_text(json.dumps({**record, "id": "../../../etc"}))
    layout.manifest_path(settings).write_text(json.dumps(replaced(document, ("generations", 0, "id"), "../x")))

    rebuilt = load_manifest(settings)
    assert rebuilt is not None
    assert [g.id for g in rebuilt.generations] == [record["id"]]
    assert rebuilt.generations[0].files == record["files"]
    assert FORMAT == rebuilt.to_json()["format"]
