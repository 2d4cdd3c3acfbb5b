"""What a dataset may hold: the arrays of a shard's row (field_specs), the bounds of every number in manifest.json,
and manifest_problem, which checks a manifest's entries against them before anything uses it (Manifest.read in
manifest.py).
"""

from __future__ import annotations

import re

import numpy as np

from src.envs.atari import MAX_ACTIONS, EnvSettings, settings_problem
from src.envs.policies import POLICIES
from src.utils.errors import is_text

HUMAN = "human"  # the policy of a game played by hand (src.play --record)
DQN_REPLAY = "dqn-replay"  # the policy of steps imported from the DQN Replay Dataset (import_dqn_replay.py)
MINARI = "minari"  # the policy of steps imported from a Minari dataset (import_minari.py)
IMPORTED = (DQN_REPLAY, MINARI)  # policies of data that no command here recorded: --resume cannot add to it

# Bounds of what a manifest may say: sizes are allocated and paths built from these numbers.
MAX_STEPS = 2**40 - 1
MAX_SHARD_ROWS = 1_000_000  # about 35 GB of 84x84 frames in one shard
MAX_SHARD_INDEX = 10**9
MAX_EPISODE = 2**62 - 1  # episode ids are int64; part K starts at K << 40
MAX_PART = 4096  # parts of a dataset recorded on several machines
MAX_SEED = 2**63 - 1
MAX_NUM_ENVS = 1024


STEPS, FRAMES = "steps", "frames"  # the contract's layout (obs and next_obs per row), and the compact one (frames.py)
# The compact layout's shard files besides its per-row ones: one-dimensional, their lengths known from the files.
STORE_FILES = {"frames": np.dtype(np.uint8), "chunks": np.dtype(np.int64)}
MAX_CHUNK_FRAMES = 65_536
CODECS = {"zstd": (1, 22)}  # codec: its levels


def field_specs(
    context_frames: int, screen_size: int, layout: str = STEPS
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Per-row dtype and shape of every array stored in a shard of `layout`."""
    frame = (screen_size, screen_size)
    frames = (
        {
            "obs": (np.dtype(np.uint8), (context_frames, *frame)),  # stacked frames, oldest first
            "next_obs": (np.dtype(np.uint8), (1, *frame)),  # the frame that follows `action`
        }
        if layout == STEPS
        else {
            "frame": (np.dtype(np.int32), ()),  # the store's index of the step's current frame (its stack's last)
            "context": (np.dtype(np.uint8), ()),  # real frames in its stack (the rest are the zeros of a start)
        }
    )
    return {
        **frames,
        "action": (np.dtype(np.int64), ()),
        "done": (np.dtype(np.bool_), ()),  # terminated or truncated after this step
        "reward": (np.dtype(np.float32), ()),  # unclipped game score change over the frame skip
        "episode": (np.dtype(np.int64), ()),  # dataset-wide episode index
    }


def bytes_per_row(context_frames: int, screen_size: int, layout: str = STEPS) -> int:
    """Bytes a row takes on disk: exact in the contract's layout; in the compact one a bound for the disk check, a
    frame compressed 4x (measured: 28x to 280x, docs/dataset.md)."""
    columns = sum(
        dtype.itemsize * int(np.prod(shape))
        for dtype, shape in field_specs(context_frames, screen_size, layout).values()
    )
    return columns if layout == STEPS else columns + screen_size * screen_size // 4


def short(value: object) -> str:
    """repr of a value from a manifest for a one-line message: escaped (no newline) and cut short."""
    try:
        text = value if isinstance(value, BaseException) else repr(value)
        return str(text).replace("\n", " ")[:80]
    except (ValueError, RecursionError):  # an int too long to print, a list nested too deep
        return f"a {type(value).__name__}"


def is_int(value: object, minimum: int, maximum: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and minimum <= value
        and (maximum is None or value <= maximum)
    )


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str(value: object, limit: int = 1000) -> bool:
    """A string of at most `limit` characters that prints on one line as itself (src.utils.errors.is_text)."""
    return is_text(value, limit)


def same(value: object, expected: object) -> bool:
    """value == expected, and of the same JSON types throughout (True is not 1, 84.0 is not 84)."""
    if type(value) is not type(expected):
        return False
    if isinstance(expected, dict):
        return value.keys() == expected.keys() and all(same(value[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(value) == len(expected) and all(same(v, e) for v, e in zip(value, expected))
    return value == expected


def bad(key: str, expected: str, value: object) -> str:
    return f"{key} must be {expected}, got {short(value)}"


KEYS = (
    "version",
    "game",
    "env_id",
    "env",
    "num_actions",
    "action_meanings",
    "seed",
    "part",
    "policy",
    "shard_size",
    "fields",
    "versions",
    "created",
    "target_steps",
    "sessions",
    "shards",
    "totals",
    "complete",
)  # Manifest.to_dict's; "layout" (the compact layout's) and "merged_from" (a merged dataset's) only where they apply
OPTIONAL_KEYS = ("layout", "merged_from")
SESSION_KEYS = {
    "started": (True, is_str),
    "steps_before": (True, lambda v: is_int(v, 0, MAX_STEPS)),
    "num_envs": (True, lambda v: is_int(v, 1, MAX_NUM_ENVS)),
    "seconds": (False, lambda v: is_number(v) and 0 <= v < 1e12),
    "from": (False, is_str),
}  # key: (required, check); "from" names the part of a merged dataset
TOTALS = ("steps", "shards", "episodes", "completed_episodes", "bytes")
SHARD_KEYS = ("index", "session", "rows", "episodes", "dones", "files")  # and "frames" in the compact layout
MAX_STORE_FRAMES = MAX_SHARD_ROWS * 5  # a shard of one-step episodes stores each step's stack and next frame


def manifest_problem(manifest: dict) -> str | None:
    """The first entry of a manifest with the wrong type, range or value, or None.

    Checked before anything uses the manifest: shard paths are built from `index` and the field names, run folders
    from `game`, and allocations from `env`, so an edited manifest (an index such as "../x", a game "x/../..", a
    screen of 10**9 pixels) must not reach them. Keys this version does not know are refused, as in `env`: the
    manifest was made by another version, and rewriting it (on --resume) would drop them.
    """
    unknown = sorted(set(manifest) - {*KEYS, *OPTIONAL_KEYS}, key=str)
    if unknown:
        return f"has a key this version does not know ({short(unknown[0])})"
    missing = [k for k in KEYS if k not in manifest]
    if missing:
        return f"lacks the key {missing[0]!r}"
    for check in (env_problem, layout_problem, header_problem, sessions_problem, shards_problem, merged_from_problem):
        problem = check(manifest)
        if problem:
            return problem
    return None


def env_problem(manifest: dict) -> str | None:
    """`env`: exactly the settings of EnvSettings, each of its type and in EnvSettings.check's range, and its env id."""
    env = manifest["env"]
    problem = settings_problem(env, "env")
    if problem:
        return problem
    if env.get("env_id") != f"ALE/{env['game']}-v5":
        return bad("env.env_id", f"ALE/{env['game']}-v5", env.get("env_id"))
    return None


def layout_name(manifest: dict) -> str:
    """The layout of a manifest that layout_problem passed: the contract's where it names none."""
    return manifest["layout"]["name"] if manifest.get("layout") is not None else STEPS


def layout_problem(manifest: dict) -> str | None:
    """`layout`, where present: the compact layout's name, codec, level and frames per chunk."""
    layout = manifest.get("layout")
    if layout is None:
        return None
    expected = (
        f'{{"name": "{FRAMES}", "codec": one of {", ".join(CODECS)}, "level": its level, '
        f'"chunk_frames": an integer in [1, {MAX_CHUNK_FRAMES}]}}'
    )
    if not (
        isinstance(layout, dict)
        and sorted(layout) == ["chunk_frames", "codec", "level", "name"]
        and layout["name"] == FRAMES
        and is_str(layout["codec"], 20)
        and layout["codec"] in CODECS
        and is_int(layout["level"], *CODECS[layout["codec"]])
        and is_int(layout["chunk_frames"], 1, MAX_CHUNK_FRAMES)
    ):
        return bad("layout", expected, layout)
    return None


def header_problem(manifest: dict) -> str | None:
    """The dataset-wide entries: game, actions, seed, part, policy, sizes, fields, versions, totals."""
    m, game = manifest, manifest["env"]["game"]
    env = EnvSettings.from_dict(m["env"])
    specs = field_specs(env.context_frames, env.screen_size, layout_name(m))
    fields = {name: {"dtype": dtype.name, "shape": list(shape)} for name, (dtype, shape) in specs.items()}
    part, totals = m["part"], m["totals"]
    for key, ok, expected in (
        ("game", m["game"] == game, f"the same as env.game ({game})"),
        ("env_id", m["env_id"] == env.env_id, env.env_id),
        ("num_actions", is_int(m["num_actions"], 1, MAX_ACTIONS), f"an integer in [1, {MAX_ACTIONS}]"),
        (
            "action_meanings",
            isinstance(m["action_meanings"], list)
            and len(m["action_meanings"]) == m["num_actions"]
            and all(is_str(a, 32) and a.isalnum() for a in m["action_meanings"]),
            "num_actions names such as NOOP, FIRE",
        ),
        ("seed", is_int(m["seed"], 0, MAX_SEED), f"an integer in [0, {MAX_SEED}]"),
        (
            "part",
            part is None
            or (
                isinstance(part, list)
                and len(part) == 2
                and all(is_int(k, 1, MAX_PART) for k in part)
                and part[0] <= part[1]
            ),
            f"null or [K, N] with 1 <= K <= N <= {MAX_PART}",
        ),
        (
            "policy",
            is_str(m["policy"]) and m["policy"] in (*POLICIES, HUMAN, *IMPORTED),
            f"one of {', '.join((*POLICIES, HUMAN, *IMPORTED))}",
        ),
        (
            "shard_size",
            is_int(m["shard_size"], 0 if m["policy"] == HUMAN else 1, MAX_SHARD_ROWS),
            f"an integer in [1, {MAX_SHARD_ROWS}] (0 for a recording made by hand)",
        ),
        (
            "fields",
            same(m["fields"], fields),
            f"the fields of {env.context_frames} frames of {env.screen_size}x{env.screen_size}",
        ),
        (
            "versions",
            isinstance(m["versions"], dict)
            and all(is_str(k, 100) and is_str(v, 100) for k, v in m["versions"].items()),
            "a mapping of package names to versions",
        ),
        ("created", is_str(m["created"], 100), "a time"),
        ("target_steps", is_int(m["target_steps"], 0, MAX_STEPS), f"an integer in [0, {MAX_STEPS}]"),
        (
            "totals",
            totals is None
            or (
                isinstance(totals, dict)
                and sorted(totals) == sorted(TOTALS)
                and all(is_int(v, 0) for v in totals.values())
            ),
            f"null or a mapping of {', '.join(TOTALS)}",
        ),
        ("complete", isinstance(m["complete"], bool), "true or false"),
    ):
        if not ok:
            return bad(key, expected, m[key])
    return None


def sessions_problem(manifest: dict) -> str | None:
    sessions = manifest["sessions"]
    if not isinstance(sessions, list):
        return bad("sessions", "a list", sessions)
    for i, session in enumerate(sessions):
        if not isinstance(session, dict):
            return bad(f"sessions[{i}]", "a mapping", session)
        unknown = sorted(set(session) - set(SESSION_KEYS), key=str)
        if unknown:
            return f"sessions[{i}] has a key this version does not know ({short(unknown[0])})"
        for key, (required, check) in SESSION_KEYS.items():
            if (required or key in session) and not check(session.get(key)):
                return bad(
                    f"sessions[{i}].{key}", "a string" if check is is_str else "a number in range", session.get(key)
                )
    return None


def shards_problem(manifest: dict) -> str | None:
    shards, env, layout = manifest["shards"], manifest["env"], layout_name(manifest)
    if not isinstance(shards, list):
        return bad("shards", "a list", shards)
    fields = set(field_specs(env["context_frames"], env["screen_size"], layout))
    keys = set(SHARD_KEYS) if layout == STEPS else {*SHARD_KEYS, "frames"}
    if layout == FRAMES:
        fields |= set(STORE_FILES)
    seen: set[int] = set()
    for i, shard in enumerate(shards):
        at = f"shards[{i}]"
        if not isinstance(shard, dict):
            return bad(at, "a mapping", shard)
        unknown = sorted(set(shard) - keys, key=str)
        if unknown:
            return f"{at} has a key this version does not know ({short(unknown[0])})"
        if layout == FRAMES and not (is_int(shard.get("frames"), 1, MAX_STORE_FRAMES)):
            return bad(
                f"{at}.frames", f"an integer in [1, {MAX_STORE_FRAMES}] (the frames in its store)", shard.get("frames")
            )
        get = shard.get
        for key, ok, expected in (  # in order, each check only once those before it passed
            ("index", lambda: is_int(get("index"), 0, MAX_SHARD_INDEX), f"an integer in [0, {MAX_SHARD_INDEX}]"),
            ("session", lambda: is_int(get("session"), 0, MAX_SHARD_INDEX), "a non-negative integer"),
            ("rows", lambda: is_int(get("rows"), 1), "a positive integer"),
            ("rows", lambda: get("rows") <= MAX_SHARD_ROWS, f"at most {MAX_SHARD_ROWS}"),
            (
                "episodes",
                lambda: (
                    isinstance(get("episodes"), list)
                    and 1 <= len(get("episodes")) <= get("rows")
                    and all(is_int(e, 0, MAX_EPISODE) for e in get("episodes"))
                ),
                f"a list of 1 to rows integers in [0, {MAX_EPISODE}]",
            ),
            ("dones", lambda: is_int(get("dones"), 0, get("rows")), "an integer in [0, rows]"),
            ("files", lambda: isinstance(get("files"), dict), "a mapping"),
        ):
            if not ok():
                return bad(f"{at}.{key}", expected, get(key))
        if shard["index"] in seen:
            return f"{at}.index {shard['index']} is listed twice"
        seen.add(shard["index"])
        missing, unknown = sorted(fields - set(shard["files"])), sorted(set(shard["files"]) - fields, key=str)
        if missing or unknown:
            what = f"lacks {missing[0]!r}" if missing else f"has an unknown field {short(unknown[0])}"
            return f"{at}.files {what} (expected exactly {', '.join(sorted(fields))})"
        for name, file in shard["files"].items():
            if not (
                isinstance(file, dict)
                and is_int(file.get("bytes"), 0)
                and isinstance(file.get("xxh3_128"), str)
                and re.fullmatch(r"[0-9a-f]{32}", file["xxh3_128"])
            ):
                return bad(f"{at}.files.{name}", '{"bytes": integer >= 0, "xxh3_128": 32 hex digits}', file)
    return None


def merged_from_problem(manifest: dict) -> str | None:
    """`merged_from` is only recorded (never read back), so its entries need only be what merge_datasets writes."""
    merged = manifest.get("merged_from")
    if merged is None:
        return None
    if not (isinstance(merged, list) and all(isinstance(p, dict) and is_str(p.get("dir"), 4096) for p in merged)):
        return bad("merged_from", 'null or a list of {"dir": ..., "seed": ..., "part": ..., "steps": ...}', merged)
    return None
