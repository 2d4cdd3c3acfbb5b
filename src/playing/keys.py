"""Keys held -> the game's action: arrows and space combined as ALE names its actions (UPRIGHTFIRE...)."""

from __future__ import annotations

import re

from src.utils.errors import UserError

KEYS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
MAX_STEPS = 1_000_000  # steps of one --keys sequence (and of one KEYS*N): a day of play at 15 fps is 1.3M


def action_for(pressed: set[str], meanings: list[str]) -> int:
    """The game's action for the keys held. ALE names combine UP/DOWN, RIGHT/LEFT and FIRE in that order
    (UPRIGHTFIRE); a combination the game lacks falls back to fewer keys (FIRE kept longest), then NOOP."""
    vertical = [k for k in ("UP", "DOWN") if k in pressed]
    horizontal = [k for k in ("RIGHT", "LEFT") if k in pressed]
    v = vertical[0] if len(vertical) == 1 else ""  # both of a pair held: they cancel
    h = horizontal[0] if len(horizontal) == 1 else ""
    fire = "FIRE" if "FIRE" in pressed else ""
    for name in (v + h + fire, h + fire, v + fire, fire, v + h, h, v):
        if name and name in meanings:
            return meanings.index(name)
    return meanings.index("NOOP") if "NOOP" in meanings else 0


def parse_keys(spec: str, meanings: list[str]) -> list[int]:
    """'RIGHT*30,UP+FIRE*5,NOOP' -> one action per step. A token is keys joined by '+' (UP, DOWN, LEFT, RIGHT,
    FIRE or SPACE; NOOP for none) or an action name of the game (RIGHTFIRE), with an optional repeat '*N'.
    N and the whole sequence are bounded by MAX_STEPS, checked before the list is built (a typo such as RIGHT*3000000000
    would otherwise fill the memory)."""
    actions: list[int] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        match = re.fullmatch(r"([A-Za-z+]+)(?:\*(\d+))?", token)
        if not match:
            raise UserError(
                f"--keys: cannot read '{shortened(token)}'; write KEYS or KEYS*N, e.g. RIGHT*30 or UP+FIRE*5"
            )
        repeat = repeat_count(token, match[2])
        if len(actions) + repeat > MAX_STEPS:
            raise UserError(
                f"--keys: the sequence is longer than {MAX_STEPS:,} steps (at '{shortened(token)}'); play it in parts"
            )
        name = match[1].upper()
        if name in meanings:
            action = meanings.index(name)
        else:
            keys = {"FIRE" if k == "SPACE" else k for k in name.split("+")} - {"NOOP"}
            unknown = sorted(keys - set(KEYS))
            if unknown:
                raise UserError(
                    f"--keys: unknown key '{shortened(unknown[0])}' in '{shortened(token)}'; "
                    f"use {', '.join(KEYS)}, NOOP "
                    f"or an action of this game: {', '.join(meanings)}"
                )
            action = action_for(keys, meanings)
        actions += [action] * repeat
    if not actions:
        raise UserError("--keys is empty; give a sequence such as RIGHT*30,LEFT*30")
    return actions


def repeat_count(token: str, digits: str | None) -> int:
    """N of KEYS*N, in [1, MAX_STEPS]; the digits are counted before int() reads them (int() refuses over 4300)."""
    if digits is None:
        return 1
    repeat = int(digits) if len(digits) <= len(str(MAX_STEPS)) else MAX_STEPS + 1
    if not 1 <= repeat <= MAX_STEPS:
        raise UserError(
            f"--keys: '{shortened(token)}' repeats {shortened(digits)} times; N must be in [1, {MAX_STEPS:,}]"
        )
    return repeat


def shortened(text: str, limit: int = 24) -> str:
    """`text` as an error line may quote it: a pasted megabyte stays out of the line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
