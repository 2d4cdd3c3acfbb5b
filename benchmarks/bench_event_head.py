"""Does the event head's reward probability mean what it says? The head trained alone on a dataset's steps with
training's recipe (the rare classes weighted up, event batches a quarter rewards and ends), scored as it comes out
(train.event_calibrate=true) and with the loss's shifts added back (what event_calibrate=false gives: the same training,
the logits shifted by a constant), against a plain cross-entropy on natural batches.

    python benchmarks/bench_event_head.py --data_dir data/boxing [--steps 2000] [--next real|last] [--variants ...]

Each trained variant: a fresh EventHead (the same seed), Adam at optimizer.lr x train.event_lr_scale (config.yaml's),
`--steps` steps of train.batch_size steps drawn at their natural rates plus (weighted) train.event_batch_size steps of
which train.event_share have a reward or an end. The head sees each step's real next frame (`--next real`: what the
event batches give it), or the last context frame in its place (`--next last`: a next frame that shows nothing of the
step's outcome, as a blurred prediction may). Scored on the validation episodes (split as training splits them) by
what an agent learning in the model takes, the expected sign p(+1) - p(-1), against the real sign: its mean
difference (bias: 0 for a calibrated head) and correlation; and the reward classes' log-loss (nats a step), the mean
predicted chance of a reward against the data's, the ranking of each sign's steps (ROC AUC), the most likely sign's
accuracy on the rewarded steps and its false-reward rate. Prints a markdown table and each row's |bias| over the
calibrated head's. About 3 minutes a trained variant at 2,000 steps on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.config import Config  # noqa: E402
from src.dataset.offline_dataset import WindowDataset, split_episodes  # noqa: E402
from src.dataset.shards import ShardedDataset  # noqa: E402
from src.models.events import ZERO, EventHead, expected_signs  # noqa: E402
from src.training.objective import EventSampling, event_loss  # noqa: E402
from src.utils.frames import frames_to_float  # noqa: E402

VARIANTS = ("weighted", "plain")  # weighted: scored calibrated and inflated


def steps_of(samples: WindowDataset, rows: np.ndarray, next_frame: str = "real") -> tuple[torch.Tensor, ...]:
    """(context (N, T, H, W) float, next frame (N, 1, H, W) float, action (N,), reward (N,), done (N,)); next_frame
    "last": the last context frame in the next frame's place."""
    context, actions, targets, rewards, dones = (np.stack(x) for x in zip(*(samples[int(r)] for r in rows)))
    as_float = lambda x: frames_to_float(torch.from_numpy(x))  # noqa: E731
    return (
        as_float(context),
        as_float(targets[:, :1] if next_frame == "real" else context[:, -1:]),
        torch.from_numpy(actions[:, 0]),
        torch.from_numpy(rewards[:, 0]),
        torch.from_numpy(dones[:, 0]),
    )


def auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of `score` for the boolean labels `positive` (Mann-Whitney, ranks of distinct floats)."""
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return float("nan")
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def scores(head: EventHead, val: tuple[torch.Tensor, ...], shift: tuple[float, float, float]) -> dict[str, float]:
    """The head's rates on `val` (steps_of's), its reward logits plus `shift`."""
    head.eval()
    with torch.inference_mode():
        logits = torch.cat([head(*(x[i : i + 512] for x in val[:3]))[0] for i in range(0, len(val[0]), 512)])
        logits = logits + torch.tensor(shift)
    head.train()
    probs = torch.softmax(logits.float(), -1).numpy()
    expected = expected_signs(logits).numpy()
    real = np.sign(val[3].numpy())
    classes = (real + 1).astype(np.int64)
    rewarded = classes != ZERO
    likeliest = probs.argmax(1)
    return {
        "bias": float(expected.mean() - real.mean()),
        "corr": float(np.corrcoef(expected, real)[0, 1]),
        "log_loss": float(-np.log(probs[np.arange(len(classes)), classes] + 1e-12).mean()),
        "p_reward": float(1 - probs[:, ZERO].mean()),
        "rate": float(rewarded.mean()),
        "auc_minus": auc(classes == 0, probs[:, 0]),
        "auc_plus": auc(classes == 2, probs[:, 2]),
        "sign_right": float((likeliest[rewarded] == classes[rewarded]).mean()) if rewarded.any() else float("nan"),
        "false": float((likeliest[~rewarded] != ZERO).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="a recorded dataset (either layout)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps a variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--next", choices=("real", "last"), default="real", help="the next frame the head sees")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := sorted(set(variants) - set(VARIANTS)):
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    cfg = Config()
    t = cfg.train
    dataset = ShardedDataset(Path(args.data_dir))
    train_rows, val_rows = split_episodes(dataset.column("episode"), cfg.data.val_ratio, t.seed)
    rewards, dones = dataset.column("reward")[train_rows], dataset.column("done")[train_rows].astype(bool)
    events = train_rows[(rewards != 0) | dones]
    sampling = EventSampling.of(rewards, dones, True, t.event_share)
    samples = WindowDataset(dataset.root, np.arange(len(dataset)))
    val = steps_of(samples, val_rows, args.next)
    lr = cfg.optimizer.lr * t.event_lr_scale
    print(
        f"{dataset.game}: {len(train_rows):,} training steps ({len(events):,} with a reward or an end), "
        f"{len(val_rows):,} validation steps; {args.steps} steps of {t.batch_size} + {t.event_batch_size} "
        f"(share {t.event_share}), Adam {lr:g}, next frame {args.next}, {torch.get_num_threads()} threads\n"
    )
    results = {}
    for variant in variants:
        weights = sampling.weights(t.event_balance if variant == "weighted" else 0.0, variant == "weighted")
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        head = EventHead(dataset.num_actions)
        head.prior(*sampling.rates(), weights.reward_shift, weights.end_shift)
        opt = torch.optim.Adam(head.parameters(), lr)
        begin = time.perf_counter()
        for _ in range(args.steps):
            natural = steps_of(samples, rng.choice(train_rows, t.batch_size), args.next)
            loss = sum(event_loss(*head(*natural[:3]), *natural[3:], weights))
            if variant != "plain":
                rare = round(t.event_batch_size * t.event_share)
                picks = np.concatenate([rng.choice(events, rare), rng.choice(train_rows, t.event_batch_size - rare)])
                rich = steps_of(samples, picks, args.next)
                loss = loss + sum(event_loss(*head(*rich[:3]), *rich[3:], weights))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), t.grad_clip)
            opt.step()
        print(f"{variant}: {time.perf_counter() - begin:.0f} s", file=sys.stderr)
        if variant == "weighted":
            results["calibrated (weighted)"] = scores(head, val, (0.0, 0.0, 0.0))
            results["inflated (weighted, shifts added back)"] = scores(head, val, weights.reward_shift)
        else:
            results[variant] = scores(head, val, (0.0, 0.0, 0.0))
    print(
        "| head | expected sign: bias | corr | log-loss | p(reward) / data | AUC -1 | AUC +1 | likeliest sign right "
        "| false rewards |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for variant, r in results.items():
        print(
            f"| {variant} | {r['bias']:+.4f} | {r['corr']:.3f} | {r['log_loss']:.4f} | {r['p_reward']:.4f} / "
            f"{r['rate']:.4f} | {r['auc_minus']:.3f} | {r['auc_plus']:.3f} | {r['sign_right']:.2f} | {r['false']:.3f} |"
        )
    if "calibrated (weighted)" in results:
        reference = max(abs(results["calibrated (weighted)"]["bias"]), 1e-6)
        for variant, r in results.items():
            if variant != "calibrated (weighted)":
                print(f"\n{variant}: |bias| {abs(r['bias']) / reference:.1f}x the calibrated head's", end="")
        print()


if __name__ == "__main__":
    main()
