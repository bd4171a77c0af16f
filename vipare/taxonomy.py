"""The project's detection classes, in one place.

The class order here is the order of the model's outputs. Which classes count as a deposit (waste
a cleansing team must collect) is decided here too; ``bin`` is context only: a normal bin is never
a deposit. Mappings from public datasets' class names to these classes belong to the dataset importers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLASSES", "DEPOSIT_CLASSES", "TAXONOMY_VERSION", "WasteClass", "class_names", "is_deposit"]

TAXONOMY_VERSION = "1"


@dataclass(frozen=True)
class WasteClass:
    """One detection class.

    Attributes:
        name: identifier used in model metadata, results and exports.
        deposit: True when a detection of this class means waste to collect.
        description: what the class covers, for labellers and model cards.
    """

    name: str
    deposit: bool
    description: str


CLASSES: tuple[WasteClass, ...] = (
    WasteClass(
        "dumped_waste",
        deposit=True,
        description="Waste left on public space: piles, loose waste, bags, bulky items, rubble.",
    ),
    WasteClass(
        "overflowing_bin",
        deposit=True,
        description="A bin or container with waste overflowing or heaped around it.",
    ),
    WasteClass(
        "bin",
        deposit=False,
        description="A normal bin or container; context, never a deposit.",
    ),
)

DEPOSIT_CLASSES: frozenset[str] = frozenset(c.name for c in CLASSES if c.deposit)


def class_names() -> list[str]:
    """Class names in model output order."""
    return [c.name for c in CLASSES]


def is_deposit(name: str) -> bool:
    """True when detections of class ``name`` count as a deposit.

    Unknown names (a model trained on another taxonomy) never count as a deposit.
    """
    return name in DEPOSIT_CLASSES
