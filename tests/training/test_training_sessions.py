"""Held-out parts: trash-bags-kr by shooting session, other sets by a hash of the file name."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.datasets import _parse_spec, import_spec
from training.paths import SHARED_DATASETS
from training.sessions import sessions, split_by_name_hash, split_by_session, split_parts, taken_at

# Three sessions: 3 shots at 10:00, 2 at 10:05, 4 at 10:30 (a few seconds apart inside each).
NAMES = [
    "20231005_100000_jpg.jpg", "20231005_100004_jpg.jpg", "20231005_100011_jpg.jpg",
    "20231005_100500_jpg.jpg", "20231005_100502_jpg.jpg",
    "20231005_103000_jpg.jpg", "20231005_103003_jpg.jpg", "20231005_103007_jpg.jpg", "20231005_103015_jpg.jpg",
]


def test_shots_seconds_apart_make_one_session() -> None:
    assert [len(s) for s in sessions(list(reversed(NAMES)))] == [3, 2, 4]
    assert [len(s) for s in sessions(NAMES, gap_s=3)] == [1, 1, 1, 2, 2, 1, 1]  # a gap of exactly 3 s joins


@pytest.mark.parametrize("seed", range(6))
def test_a_session_never_straddles_the_split(seed: int) -> None:
    split = split_by_session(NAMES, min_holdout=3, seed=seed)
    assert len(split.holdout) >= 3 and split.fit
    assert set(split.fit) | set(split.holdout) == set(NAMES) and not set(split.fit) & set(split.holdout)
    for session in sessions(NAMES):
        assert set(session) <= set(split.fit) or set(session) <= set(split.holdout)


def test_the_same_seed_gives_the_same_split() -> None:
    assert split_by_session(NAMES, min_holdout=4, seed=1) == split_by_session(NAMES, min_holdout=4, seed=1)


def test_a_split_that_would_leave_nothing_to_fit_on_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold out 9"):
        split_by_session(NAMES, min_holdout=9)


def test_a_name_without_a_time_says_so() -> None:
    with pytest.raises(ValueError, match="no YYYYMMDD_HHMMSS"):
        taken_at("IMG_0001.jpg")


def test_names_without_a_time_are_held_out_by_hash_stably() -> None:
    names = [f"{i:06d}_jpg.jpg" for i in range(2000)]
    split = split_parts(names)
    assert split == split_by_name_hash(list(reversed(names)))
    assert 0.08 < len(split.holdout) / len(names) < 0.12
    # A photo's part does not depend on the other photos in the folder.
    assert set(split_by_name_hash(names[:500]).holdout) == set(split.holdout) & set(names[:500])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("trash-bags-kr", "SOURCE:SPLIT"),
        ("trash-bags-kr:train+", "SOURCE:SPLIT"),
        ("nowhere:train", "SOURCE:SPLIT"),
        ("trash-bags-kr:train:test", "PART must be one of"),
    ],
)
def test_bad_specs_say_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _parse_spec(spec)


def test_a_folder_in_the_taxonomy_is_a_source(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n  0: dumped_waste\n")
    source, splits, part = _parse_spec(f"{tmp_path}:train")
    assert source.mapping == {"dumped_waste": "dumped_waste"} and splits == ["train"] and part is None


@pytest.mark.skipif(not (SHARED_DATASETS / "trash-bags-kr").is_dir(), reason="needs ../shared/datasets")
def test_trash_bags_kr_parts_are_disjoint_sessions_with_40_held_out() -> None:
    fit = import_spec("trash-bags-kr:train+val:fit")[0]
    held = import_spec("trash-bags-kr:train+val:holdout")[0]
    assert len(held) >= 40 and len(fit) + len(held) == 117
    held_names = {s.image.name for s in held}
    assert not held_names & {s.image.name for s in fit}
    for session in sessions([s.image.name for s in fit + held]):
        assert set(session) <= held_names or not set(session) & held_names
