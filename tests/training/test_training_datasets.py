"""Dataset import: label parsing, class mapping, dedupe, hashing, written layout (synthetic, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.datasets import Box, Sample, Source, dataset_hash, import_split, parse_label_text, write_dataset
from vipare.taxonomy import class_names

BOX_LINE = "1 0.5 0.5 0.2 0.4"
POLYGON_LINE = "0 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (BOX_LINE, [Box(1, 0.5, 0.5, 0.2, 0.4)]),
        (POLYGON_LINE, [Box(0, 0.2, 0.4, 0.2, 0.4)]),
        (f"{BOX_LINE}\n{POLYGON_LINE}", [Box(1, 0.5, 0.5, 0.2, 0.4), Box(0, 0.2, 0.4, 0.2, 0.4)]),
        ("1 0.05 0.5 0.2 0.2", [Box(1, 0.075, 0.5, 0.15, 0.2)]),  # clipped at the left edge
    ],
)
def test_parse_label_text(text: str, expected: list[Box]) -> None:
    boxes, dropped = parse_label_text(text, {0: 0, 1: 1})
    assert len(boxes) == len(expected)
    for got, want in zip(boxes, expected, strict=True):
        assert got.cls == want.cls
        assert (got.cx, got.cy, got.w, got.h) == pytest.approx((want.cx, want.cy, want.w, want.h))
    assert not dropped


def test_parse_label_text_drops_unmapped_and_malformed() -> None:
    boxes, dropped = parse_label_text("2 0.5 0.5 0.1 0.1\n0 0.5 0.5\n0 0.5 0.5 0 0.1", {0: 0, 2: None})
    assert boxes == []
    assert dropped == {"unmapped_class": 1, "malformed_line": 1, "empty_box": 1}


def test_parse_label_text_rejects_undeclared_class() -> None:
    with pytest.raises(KeyError):
        parse_label_text(BOX_LINE, {0: 0})


def _write_source(root: Path, images: dict[str, bytes], labels: dict[str, str]) -> Source:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": {0: "garbage", 1: "garbage_bin", 2: "other"}}))
    for name, data in images.items():
        (root / "images" / "train" / name).write_bytes(data)
    for stem, text in labels.items():
        # No trailing newline, like the shared sets.
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    return Source("toy", root, {"garbage": "dumped_waste", "garbage_bin": "bin", "other": None})


def test_import_and_write(tmp_path: Path) -> None:
    source = _write_source(
        tmp_path / "src",
        {"a.jpg": b"image-a", "b.jpg": b"image-b", "c.jpg": b"image-a"},
        {"a": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1", "b": "2 0.5 0.5 0.2 0.2", "c": "0 0.5 0.5 0.2 0.2"},
    )
    samples, dropped = import_split(source, "train")
    assert [s.image.name for s in samples] == ["a.jpg", "b.jpg", "c.jpg"]
    assert dropped == {"unmapped_class": 1}
    names = class_names()
    assert [b.cls for b in samples[0].boxes] == [names.index("dumped_waste"), names.index("bin")]

    info = write_dataset(tmp_path / "out", {"train": samples[:2], "val": samples[2:]})
    assert info.images == {"train": 1, "val": 1}  # a.jpg has the bytes of c.jpg, which is in val
    assert info.dropped == {"image_also_in_val": 1}
    data = yaml.safe_load(info.data_yaml.read_text())
    assert list(data["names"].values()) == names
    link = tmp_path / "out" / "images" / "train" / "toy__b.jpg"
    assert link.is_symlink() and link.read_bytes() == b"image-b"
    assert (tmp_path / "out" / "labels" / "train" / "toy__b.txt").read_text() == ""


def test_dataset_hash_ignores_order_and_paths() -> None:
    one = Sample("x", Path("/a/1.jpg"), "h1", (Box(0, 0.5, 0.5, 0.1, 0.1),))
    two = Sample("y", Path("/b/2.jpg"), "h2", ())
    moved = Sample("x", Path("/elsewhere/1.jpg"), "h1", (Box(0, 0.5, 0.5, 0.1, 0.1),))
    names = class_names()
    assert dataset_hash({"train": [one, two]}, names) == dataset_hash({"train": [two, moved]}, names)
    assert dataset_hash({"train": [one]}, names) != dataset_hash({"val": [one]}, names)
    relabelled = Sample("x", Path("/a/1.jpg"), "h1", (Box(1, 0.5, 0.5, 0.1, 0.1),))
    assert dataset_hash({"train": [one]}, names) != dataset_hash({"train": [relabelled]}, names)


def test_command_takes_repeated_splits_and_a_validation_only_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from training import datasets

    one = _write_source(tmp_path / "one", {"a.jpg": b"image-a"}, {"a": "0 0.5 0.5 0.2 0.2"})
    two = _write_source(tmp_path / "two", {"b.jpg": b"image-b"}, {"b": "1 0.5 0.5 0.2 0.2"})
    monkeypatch.setattr(datasets, "SOURCES", {"one": one, "two": two})
    runner = CliRunner()
    args = [str(tmp_path / "out"), "--no-train", "--val", "one:train", "--val", "two:train"]
    done = runner.invoke(datasets.main, args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["images"] == {"train": 0, "val": 2}
    unknown = runner.invoke(datasets.main, [str(tmp_path / "next"), "--train", "three:train"])
    assert unknown.exit_code == 2 and "three:train" in unknown.stderr and not (tmp_path / "next").exists()
    both = runner.invoke(datasets.main, [str(tmp_path / "next"), "--no-train", "--train", "one:train"])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_taxonomy_source_maps_classes_to_themselves(tmp_path: Path) -> None:
    from training.datasets import taxonomy_source

    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": dict(enumerate(class_names()))}))
    source = taxonomy_source(tmp_path, "reviews")
    assert source.name == "reviews" and dict(source.mapping) == {n: n for n in class_names()}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": ["dumped_waste", "sofa"]}))
    with pytest.raises(ValueError, match="sofa"):
        taxonomy_source(tmp_path)


def test_replay_sample_is_seeded_and_keeps_order() -> None:
    from training.datasets import replay_sample

    samples = [Sample("s", Path(f"{i}.jpg"), f"{i:064d}", ()) for i in range(20)]
    first = replay_sample(samples, 5, seed=1)
    assert first == replay_sample(samples, 5, seed=1) and len(first) == 5
    assert first == sorted(first, key=lambda s: int(s.image.stem))
    assert first != replay_sample(samples, 5, seed=2)
    assert replay_sample(samples, 50) == samples and replay_sample(samples, 0) == []


def _corners(box: Box) -> tuple[float, ...]:
    return tuple(round(v, 6) for v in (box.cx - box.w / 2, box.cy - box.h / 2, box.cx + box.w / 2, box.cy + box.h / 2))


def test_merge_piles_joins_touching_bags_of_a_class_into_one_box() -> None:
    from training.datasets import merge_piles

    bag, bin_ = class_names().index("dumped_waste"), class_names().index("bin")
    row = [Box(bag, 0.15, 0.5, 0.1, 0.1), Box(bag, 0.27, 0.5, 0.1, 0.1), Box(bag, 0.39, 0.52, 0.1, 0.1)]
    far = Box(bag, 0.9, 0.1, 0.05, 0.05)  # a bag across the street: its own pile
    beside = Box(bin_, 0.2, 0.5, 0.1, 0.2)  # a bin touching the pile is not part of it
    merged = merge_piles([*row, far, beside])
    assert sorted(map(_corners, merged)) == sorted(
        [(0.1, 0.45, 0.44, 0.57), _corners(far), _corners(beside)]
    )
    assert [b.cls for b in merged].count(bag) == 2
    # A gap wider than a quarter of a bag on each side keeps two bags apart; no boxes, nothing to merge.
    apart = [Box(bag, 0.1, 0.5, 0.1, 0.1), Box(bag, 0.16 + 0.1, 0.5, 0.1, 0.1)]
    assert merge_piles(apart) == apart and merge_piles([]) == []


def test_command_joins_piles_of_per_item_sources_in_training_photos_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import json

    from click.testing import CliRunner

    from training import datasets

    two_bags = "0 0.40 0.5 0.2 0.2\n0 0.61 0.5 0.2 0.2"
    bags = dataclasses.replace(_write_source(tmp_path / "bags", {"a.jpg": b"image-a"}, {"a": two_bags}), name="bags",
                               per_item=True)
    piles = dataclasses.replace(_write_source(tmp_path / "piles", {"b.jpg": b"image-b"}, {"b": two_bags}), name="piles")
    monkeypatch.setattr(datasets, "SOURCES", {"bags": bags, "piles": piles})
    out = tmp_path / "out"
    args = [str(out), "--train", "bags:train", "--train", "piles:train", "--piles"]
    done = CliRunner().invoke(datasets.main, [*args, "--val", "bags:train"])
    assert done.exit_code == 0, done.output
    # a.jpg is in val too, so training keeps b.jpg only: a source that boxes piles keeps its two boxes
    assert (out / "labels" / "train" / "piles__b.txt").read_text().count("\n") == 2
    assert (out / "labels" / "val" / "bags__a.txt").read_text().count("\n") == 2  # val keeps what was labelled
    record = json.loads((out / "dataset.json").read_text())
    assert record["piles"] == {"gap": datasets.PILE_GAP, "sources": []}  # no per-bag photo left in training

    again = CliRunner().invoke(datasets.main, [str(tmp_path / "again"), *args[1:], "--val", "piles:train"])
    assert again.exit_code == 0, again.output
    lines = (tmp_path / "again" / "labels" / "train" / "bags__a.txt").read_text().splitlines()
    assert lines == ["0 0.505000 0.500000 0.410000 0.200000"]
    assert json.loads(again.stdout)["dropped"]["joined_into_piles"] == 1
    assert json.loads((tmp_path / "again" / "dataset.json").read_text())["piles"]["sources"] == ["bags"]
