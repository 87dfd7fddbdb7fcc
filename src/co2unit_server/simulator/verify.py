"""Proof that nothing was lost: every server copy of a pushed dir against the card it came from.

A unit's cards are its generations (a new SD card starts a new one). On the server, a pushed
dir exists as the current `<hw_id>/<dir>/` and as copies moved to `superseded/<ts>/<dir>/` when
a new card began a new sequence. Correct means: in time order, each copy matches a distinct,
later generation; a copy holds the card's first files in order; every file but its last is
byte-identical to the card's; the last is a prefix of the card's file (still being pushed). No
gap, duplicate, zero-filled hole or stray file fits that. Every byte a card counted as delivered
(its saved position) must be in its copy. When the fleet drained (every unit reported all
pushed), the current dir must be exactly the current card's.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..records.pushstore import SUPERSEDED_DIR
from .sdcard import SdCard


def server_copies(unit_dir: Path, dirname: str) -> list[Path]:
    """The server's copies of one pushed dir, oldest first (superseded ones, then current)."""
    superseded = unit_dir / SUPERSEDED_DIR
    stamps = sorted(os.listdir(superseded)) if superseded.is_dir() else []
    copies = [superseded / stamp / dirname for stamp in stamps]
    copies.append(unit_dir / dirname)
    return [c for c in copies if c.is_dir()]


def first_difference(stored: bytes, card: bytes) -> int:
    """Offset of the first byte where the server's copy differs from the card's."""
    for i, (a, b) in enumerate(zip(stored, card, strict=False)):
        if a != b:
            return i
    return min(len(stored), len(card))


def describe_difference(name: str, stored: bytes, card: bytes) -> str:
    at = first_difference(stored, card)
    if at == len(card) and len(stored) > len(card):
        return f"{name}: server has {len(stored)} bytes, the card only {len(card)}"
    if at == len(stored):
        return f"{name}: server has only {len(stored)} of {len(card)} bytes"
    hole = " (zero-filled)" if stored[at:at + 1] == b"\0" else ""
    return (f"{name}: differs at byte {at}{hole}: server {stored[at:at + 16]!r}, "
            f"card {card[at:at + 16]!r}")


def copy_problem(copy: Path, card_dir: Path, exact: bool) -> str | None:
    """Why `copy` is not a correct server copy of `card_dir`, or None when it is."""
    entries = sorted(os.listdir(copy))
    stray = [e for e in entries if not (copy / e).is_file()]
    if stray:
        return f"{copy}: entries that are not pushed files: {stray}"
    card_names = sorted(os.listdir(card_dir)) if card_dir.is_dir() else []
    if entries != card_names[: len(entries)]:
        return f"{copy}: files {entries} are not the card's first files {card_names}"
    if exact and entries != card_names:
        return f"{copy}: has {entries}, the card has {card_names}"
    for i, name in enumerate(entries):
        stored = (copy / name).read_bytes()
        card = (card_dir / name).read_bytes()
        last = i == len(entries) - 1 and not exact
        if stored != card and not (last and card.startswith(stored)):
            return f"{copy}/{describe_difference(name, stored, card)}"
    return None


def verify_dir(unit_dir: Path, dirname: str, cards: list[Path], drained: bool) -> str | None:
    """Check one pushed dir of one unit against its cards (oldest first); None when correct."""
    matched: dict[int, Path] = {}
    for copy in server_copies(unit_dir, dirname):
        is_current = copy == unit_dir / dirname
        problems = []
        for gen in range(max(matched, default=-1) + 1, len(cards)):
            exact = drained and is_current and gen == len(cards) - 1
            problem = copy_problem(copy, cards[gen] / dirname, exact)
            if problem is None:
                matched[gen] = copy
                break
            problems.append(problem)
        else:
            # The most likely match: the next card for an old copy, the current card for the rest.
            return (problems[-1] if is_current else problems[0]) if problems else (
                f"{copy}: more server copies than cards (superseded without a new card)")
    if drained and len(cards) - 1 not in matched and _card_has_data(cards[-1] / dirname):
        return f"{unit_dir / dirname}: the current card's {dirname} never reached the server"
    return acknowledged_problem(dirname, cards, matched)


def acknowledged_problem(dirname: str, cards: list[Path], matched: dict[int, Path]
                         ) -> str | None:
    """Bytes a card counted as delivered (its saved position) that its server copy lacks."""
    for gen, card in enumerate(cards):
        state = SdCard(card).load_state()["sync_states"].get(dirname, {})
        name, progress = (state.get("ack_file") or [None, 0])[:2]
        if not name or not progress:
            continue
        copy = matched.get(gen)
        stored = (copy / name).stat().st_size if copy and (copy / name).is_file() else 0
        if stored < progress:
            return (f"{card.name} counted {dirname}/{name} as delivered up to byte {progress}, "
                    f"the server's copy has {stored}")
    return None


def _card_has_data(card_dir: Path) -> bool:
    return card_dir.is_dir() and any((card_dir / n).stat().st_size for n in os.listdir(card_dir))
