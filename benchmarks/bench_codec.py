"""Which codec and chunk size for a compact frame store, where each frame of an episode is stored once, in chunks of C
consecutive frames, each chunk compressed on its own?

    python benchmarks/bench_codec.py [--games Pong,Breakout,Boxing] [--chunks 64,128,256,512,1024]
                                     [--max_frames N] [--data GAME=DIR,...] [--row_seconds 10] [--decode_chunks 200]

Needs `pip install zstandard blosc2` (not dependencies of the project). Everything runs in this process on one core:
zstandard with threads=0 (no worker threads), blosc2 with nthreads=1 (CParams, DParams and set_nthreads).

Frames: each game's dataset (recorded by src.dataset.generate_dataset; --data names the directories) is read back into
the sequence the compact layout would store: per episode (its rows gathered across shards by their episode id, in
id order), the first row's current frame obs[row, -1] (the 3 earlier context frames at an episode start are zero
padding, not stored) and then every row's next_obs[row, 0]. All episodes of a game are concatenated into one
(F, 84, 84) uint8 array (--max_frames keeps its first F frames, for a quick run), cut into chunks of C frames (the
last one shorter; a chunk may span an episode end).
Codecs, one table row per codec and chunk size C:
  zstd-L           python-zstandard at level L, the chunk's bytes as they are
  zstd-3 xor       zstd level 3 on the chunk with every frame but its first XORed with the one before it
  zstd-3 sub       the same with the difference mod 256 (frame - previous frame) instead of XOR
  blosc2 CODEC     blosc2.compress2 with typesize=1, the codec at blosc clevel L (for LZ4, acceleration = 10 - L) and
                   the filter; NOSHUFFLE or BITSHUFFLE (SHUFFLE does nothing to 1-byte items). blosc2 cuts a chunk
                   into blocks compressed independently, of the size it picks (the `block` column)
Columns:
  bytes/frame      compressed bytes / frames, over the chunks compressed
  ratio            raw bytes (7,056 a frame) / compressed bytes
  compress MB/s    raw megabytes (10^6 bytes) compressed per second, the delta filter included; for comparison, a
                   recording at 2,000-4,000 steps/s adds 14-28 MB/s of new frames
  decode ms        median over up to --decode_chunks full chunks of the time to decompress one whole chunk into a
                   (C, 84, 84) uint8 array (the delta undone included)
  windows/s        1000 / decode ms: random 5-frame training windows per second on one core when every window decodes
                   its own chunk (a window that spans two chunks, 4 in C of them, would decode both)
  decode MB/s      raw megabytes decoded per second: the rate when many windows are drawn from each decoded chunk
  chunks           chunks compressed / chunks in the game; fewer than all where compressing them all would take more
                   than --row_seconds (the slow levels such as zstd-19): the chunks are then a random subset (same
                   order for every codec of a chunk size), and bytes/frame and ratio are estimated from them
Each codec is warmed up (one chunk compressed and decoded, checked to round-trip exactly) before it is timed with
time.perf_counter. After each game's table, a line lists the smallest rows whose chunk decodes in under 1 ms; at the
end, one table over all games: per row, the largest bytes/frame, the slowest compression and the slowest decode.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402

try:
    import zstandard
except ImportError:
    zstandard = None
try:
    import blosc2
except ImportError:
    blosc2 = None

DATA = {
    "Pong": "data/demo_pong",
    "Breakout": "runs/bench_quality/data/Breakout",
    "Boxing": "runs/bench_quality/data/Boxing",
}
FRAME_BYTES = 84 * 84
WINDOW = 5  # frames of a training window
FAST_MS = 1.0  # the summary's decode limit
MIN_CHUNKS = 3  # compressed even past --row_seconds


# ---------------------------------------------------------------------------------------------- frames


def game_frames(path: Path, max_frames: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(F, 84, 84) uint8 frames of all episodes, each episode's frames in step order, episodes in id order; the
    episodes' lengths in frames; and the count of episode continuations in a later shard whose first obs[-1] is
    not the frame stored last for that episode (0 for a sound dataset)."""
    from src.dataset.shards import ShardedDataset  # here: it imports zstandard, which main checks for first

    pieces: dict[int, list[np.ndarray]] = {}
    mismatches = 0
    ds = ShardedDataset(path, verify="none")
    try:
        for pos in range(len(ds.shards)):
            done = np.asarray(ds.array(pos, "done"))
            episode = np.asarray(ds.array(pos, "episode"))
            obs, next_obs = ds.array(pos, "obs"), ds.array(pos, "next_obs")
            starts = np.concatenate([[0], np.flatnonzero(done[:-1]) + 1])
            ends = np.concatenate([starts[1:], [len(done)]])
            for s, e in zip(starts.tolist(), ends.tolist()):
                ep = int(episode[s])
                if not (episode[s:e] == ep).all():
                    raise UserError(f"{path}: shard {pos} rows {s}..{e - 1} mix episodes without a done between them")
                segments = pieces.setdefault(ep, [])
                if not segments:  # the episode's first row: its current frame, then every next frame
                    segments.append(np.array(obs[s, -1][None]))
                elif not np.array_equal(obs[s, -1], segments[-1][-1]):
                    mismatches += 1
                segments.append(np.array(next_obs[s:e, 0]))
    finally:
        ds.close()
    lengths, parts, total = [], [], 0
    for ep in sorted(pieces):
        frames = np.concatenate(pieces.pop(ep))
        if max_frames is not None and total + len(frames) > max_frames:
            frames = frames[: max_frames - total]
        if len(frames):
            parts.append(frames)
            lengths.append(len(frames))
            total += len(frames)
    return np.ascontiguousarray(np.concatenate(parts)), np.array(lengths), mismatches


# ---------------------------------------------------------------------------------------------- codecs


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[np.ndarray], bytes]  # a C-contiguous (C, 84, 84) uint8 chunk
    decompress: Callable[[bytes], np.ndarray]  # back to (C, 84, 84) uint8
    block: Callable[[bytes], str]  # the block size a compressed chunk was cut into ("-": one block)


def as_frames(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 84, 84)


def delta(chunk: np.ndarray, op: np.ufunc) -> np.ndarray:
    """Every frame but the first replaced by op(frame, previous frame)."""
    out = np.empty_like(chunk)
    out[0] = chunk[0]
    op(chunk[1:], chunk[:-1], out=out[1:])
    return out


def undelta(diffs: np.ndarray, op: np.ufunc) -> np.ndarray:
    """The inverse of delta, with op's inverse: one call per frame (ufunc.accumulate along axis 0 is ~10x slower)."""
    out = np.empty_like(diffs)
    out[0] = diffs[0]
    for i in range(1, len(diffs)):
        op(out[i - 1], diffs[i], out=out[i])
    return out


def zstd(level: int, filt: str | None = None) -> Codec:
    cctx = zstandard.ZstdCompressor(level=level, threads=0)  # threads=0: compressed in this thread
    dctx = zstandard.ZstdDecompressor()
    no_block: Callable[[bytes], str] = lambda data: "-"  # noqa: E731
    if filt is None:
        return Codec(f"zstd-{level}", cctx.compress, lambda data: as_frames(dctx.decompress(data)), no_block)
    forward, inverse = {"xor": (np.bitwise_xor, np.bitwise_xor), "sub": (np.subtract, np.add)}[filt]
    return Codec(
        f"zstd-{level} {filt}",
        lambda chunk: cctx.compress(delta(chunk, forward)),
        lambda data: undelta(as_frames(dctx.decompress(data)), inverse),
        no_block,
    )


def blosc(codec: str, clevel: int, filt: str) -> Codec:
    cparams = blosc2.CParams(
        codec=blosc2.Codec[codec],
        clevel=clevel,
        filters=[blosc2.Filter[filt]],
        filters_meta=[0],
        typesize=1,
        nthreads=1,
    )
    dparams = blosc2.DParams(nthreads=1)
    return Codec(
        f"blosc2 {codec.lower()}-{clevel} {'noshuffle' if filt == 'NOFILTER' else filt.lower()}",
        lambda chunk: blosc2.compress2(chunk, cparams=cparams),
        lambda data: as_frames(blosc2.decompress2(data, dparams=dparams)),
        lambda data: f"{blosc2.get_cbuffer_sizes(data)[2] // 1024}K",
    )


def codecs() -> list[Codec]:
    return [
        *(zstd(level) for level in (1, 3, 9, 19)),
        zstd(3, "xor"),
        zstd(3, "sub"),
        *(blosc(c, level, f) for c, level in (("ZSTD", 3), ("LZ4", 9)) for f in ("NOFILTER", "BITSHUFFLE")),
    ]


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    codec: str
    chunk: int
    bytes_per_frame: float
    compress_mbs: float
    decode_ms: float
    block: str
    compressed: int  # chunks compressed
    chunks: int  # chunks in the game

    @property
    def ratio(self) -> float:
        return FRAME_BYTES / self.bytes_per_frame

    @property
    def windows(self) -> float:
        return 1000 / self.decode_ms

    @property
    def decode_mbs(self) -> float:
        return self.chunk * FRAME_BYTES / self.decode_ms / 1e3


def measure(
    codec: Codec, frames: np.ndarray, size: int, order: np.ndarray, row_seconds: float, decode_chunks: int
) -> Row:
    chunks = [frames[i : i + size] for i in range(0, len(frames), size)]
    warm = chunks[order[0]]
    data = codec.compress(warm)
    if not np.array_equal(codec.decompress(data), warm):
        raise AssertionError(f"{codec.name} C={size}: the chunk does not round-trip")
    block = codec.block(data)
    compressed: dict[int, bytes] = {}
    seconds = 0.0
    for i in order.tolist():
        start = time.perf_counter()
        data = codec.compress(chunks[i])
        seconds += time.perf_counter() - start
        compressed[i] = data
        if seconds > row_seconds and len(compressed) >= MIN_CHUNKS:
            break
    raw_frames = sum(len(chunks[i]) for i in compressed)
    stored = sum(len(d) for d in compressed.values())
    full = [i for i in compressed if len(chunks[i]) == size] or list(compressed)
    codec.decompress(compressed[full[0]])
    times = []
    for i in full[:decode_chunks]:
        start = time.perf_counter()
        codec.decompress(compressed[i])
        times.append(time.perf_counter() - start)
    return Row(
        codec.name,
        size,
        stored / raw_frames,
        raw_frames * FRAME_BYTES / seconds / 1e6,
        statistics.median(times) * 1e3,
        block,
        len(compressed),
        len(chunks),
    )


# ---------------------------------------------------------------------------------------------- printing


def table(rows: list[Row]) -> str:
    head = ["codec", "C", "bytes/frame", "ratio", "compress MB/s", "decode ms", "windows/s", "decode MB/s", "block"]
    head.append("chunks")
    body = [
        [
            r.codec,
            str(r.chunk),
            f"{r.bytes_per_frame:,.0f}",
            f"{r.ratio:,.0f}",
            f"{r.compress_mbs:,.0f}" if r.compress_mbs >= 10 else f"{r.compress_mbs:.1f}",
            f"{r.decode_ms:.3f}",
            f"{r.windows:,.0f}",
            f"{r.decode_mbs:,.0f}",
            r.block,
            f"{r.compressed}/{r.chunks}" + ("" if r.compressed == r.chunks else " (subset)"),
        ]
        for r in rows
    ]
    return markdown(head, body)


def markdown(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    left = {0}  # the codec column is text; the rest are numbers

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 1) + ("-" if j in left else ":") for j, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def summary(rows: list[Row], best: int = 5) -> str:
    fast = sorted((r for r in rows if r.decode_ms < FAST_MS), key=lambda r: r.bytes_per_frame)[:best]
    items = [
        f"{r.codec} C={r.chunk}: {r.bytes_per_frame:,.0f} B/frame, {r.decode_ms:.2f} ms, {r.compress_mbs:,.0f} MB/s"
        for r in fast
    ]
    return f"smallest with decode < {FAST_MS:g} ms: " + ("; ".join(items) if items else "none")


def overall(results: dict[str, list[Row]]) -> str:
    """Per codec and chunk size, the worst game's bytes/frame, compression and decode."""
    games = list(results)
    keyed = {g: {(r.codec, r.chunk): r for r in rows} for g, rows in results.items()}
    head = ["codec", "C", *(f"B/frame {g}" for g in games), "max B/frame", "min compress MB/s", "max decode ms"]
    head.append("min windows/s")
    body = []
    for key in keyed[games[0]]:
        rows = [keyed[g][key] for g in games]
        worst_ms = max(r.decode_ms for r in rows)
        body.append(
            [
                key[0],
                str(key[1]),
                *(f"{r.bytes_per_frame:,.0f}" for r in rows),
                f"{max(r.bytes_per_frame for r in rows):,.0f}",
                f"{min(r.compress_mbs for r in rows):,.1f}",
                f"{worst_ms:.3f}",
                f"{1000 / worst_ms:,.0f}",
            ]
        )
    return markdown(head, body)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_data(text: str | None) -> dict[str, Path]:
    data = {g: ROOT / p for g, p in DATA.items()}
    for item in filter(None, (text or "").split(",")):
        game, sep, path = item.partition("=")
        if not sep or not game or not path:
            raise UserError(f"--data takes GAME=DIR pairs separated by commas, not '{item}'")
        data[game] = Path(path)
    return data


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", default="Pong,Breakout,Boxing", help="comma-separated games, each a key of --data")
    p.add_argument("--chunks", default="64,128,256,512,1024", help="comma-separated chunk sizes C, in frames")
    p.add_argument("--max_frames", type=int, default=None, help="use only each game's first N frames (a quick run)")
    p.add_argument("--data", default=None, help=f"GAME=DIR,... datasets added to or replacing the defaults {DATA}")
    p.add_argument("--row_seconds", type=float, default=10.0, help="compression time after which a row takes a subset")
    p.add_argument("--decode_chunks", type=int, default=200, help="chunks timed for the decode median")
    p.add_argument("--seed", type=int, default=0, help="the order in which chunks are compressed (and subsets drawn)")
    args = p.parse_args(argv)
    missing = [name for name, module in (("zstandard", zstandard), ("blosc2", blosc2)) if module is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} not installed: pip install zstandard blosc2")
    data = parse_data(args.data)
    games = [g for g in args.games.split(",") if g]
    unknown = [g for g in games if g not in data]
    if unknown:
        raise UserError(f"no dataset for {', '.join(unknown)}: add GAME=DIR to --data (known: {', '.join(data)})")
    try:
        sizes = [int(c) for c in args.chunks.split(",") if c]
    except ValueError:
        raise UserError(f"--chunks takes comma-separated integers, not '{args.chunks}'") from None
    if not sizes or min(sizes) < 2 or (args.max_frames is not None and args.max_frames < 1):
        raise UserError("--chunks must be integers >= 2 and --max_frames >= 1")

    blosc2.set_nthreads(1)
    print("# Frame codecs for the compact dataset layout\n")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
    print(f"zstandard {zstandard.__version__} (libzstd {libzstd}, backend {zstandard.backend})")
    print(f"blosc2 {blosc2.__version__} (c-blosc2 {blosc2.blosclib_version.split()[0]})")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print("threads: one; zstandard threads=0 (no worker threads), blosc2 nthreads=1 (CParams, DParams, set_nthreads)")
    print(
        f"chunk sizes {sizes}; a row compresses a subset past {args.row_seconds:g} s; decode median over up to "
        f"{args.decode_chunks} chunks; seed {args.seed}"
    )
    results: dict[str, list[Row]] = {}
    started = time.perf_counter()
    for game in games:
        t0 = time.perf_counter()
        frames, lengths, mismatches = game_frames(data[game], args.max_frames)
        if len(frames) < max(sizes):
            raise UserError(f"{game}: {len(frames)} frames, fewer than the largest chunk size {max(sizes)}")
        print(f"\n## {game}\n")
        print(
            f"{data[game]}: {len(frames):,} frames ({len(frames) * FRAME_BYTES / 1e6:,.0f} MB raw) in {len(lengths)} "
            f"episodes (frames per episode: median {np.median(lengths):,.0f}, min {lengths.min():,}, max "
            f"{lengths.max():,}); {mismatches} continuations that disagree; read in {time.perf_counter() - t0:.1f} s\n"
        )
        rows = []
        for size in sizes:
            order = np.random.default_rng(args.seed).permutation(-(-len(frames) // size))
            for codec in codecs():
                rows.append(measure(codec, frames, size, order, args.row_seconds, args.decode_chunks))
                print(f"  {game} C={size} {codec.name}: done", file=sys.stderr, flush=True)
        names = [c.name for c in codecs()]
        rows.sort(key=lambda r: (names.index(r.codec), r.chunk))
        print(table(rows))
        print(f"\n{game}: {summary(rows)}")
        results[game] = rows
        del frames
    if len(results) > 1:
        print("\n## All games: the worst game per row\n")
        print(overall(results))
    print(f"\n{time.perf_counter() - started:,.0f} s in all")
    return 0


if __name__ == "__main__":
    run_cli(main)
