"""Evaluation: rollout semantics, an oracle scores zero, and the command's files and errors."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from src.dataset.shards import ShardedDataset
from src.envs.atari import EnvSettings
from src.envs.game import Steps, play_episodes
from src.eval import alive, evaluate, evaluate_checkpoint, event_curves, headline, return_fidelity, summarise
from src.evaluation.ball import ball_block
from src.evaluation.cases import Windows, event_cases, windows_from_dataset, windows_from_episodes
from src.evaluation.config import EvalConfig
from src.evaluation.outputs import report, wandb_scores, write_outputs
from src.models.checkpoint import read_checkpoint
from src.models.rollout import Feedback, rollout
from src.models.run import find_checkpoint
from src.models.world_model import ModelConfig, build_model
from src.utils.checkpoint import save_checkpoint
from src.utils.errors import UserError
from src.utils.logging import NO_LOGIN
from src.utils.metrics import ALIVE, STEP_METRICS, StepMetric, of_the_step
from tests.conftest import error_line, run, run_main
from tests.test_logging import read_records, silent_server

EVAL = [sys.executable, "-m", "src.eval"]


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    """eval logs to W&B by default when it finds a login: never from these tests (the W&B tests set their own mode)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_horizon_one_is_one_forward_pass() -> None:
    """Catches an off-by-one in the rollout loop (an extra step, or the context shifted before the first)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), num_actions=6)
    nn.init.normal_(model.head.conv.weight, std=0.1)  # a model that changes the frame, not the zero-init copy
    context, actions = torch.rand(3, 4, 84, 84), torch.tensor([[0], [3], [5]])
    with torch.no_grad():
        expected = model(context, actions[:, 0]).clamp(0, 1)
    assert torch.equal(rollout(model, context, actions, Feedback("float")), expected)
    two = rollout(model, context, torch.tensor([[0, 1], [3, 2], [5, 5]]), Feedback("float"))
    with torch.no_grad():
        second = model(torch.cat([context[:, 1:], expected], 1), torch.tensor([1, 2, 5])).clamp(0, 1)
    assert torch.equal(two[:, :1], expected) and torch.equal(two[:, 1:], second)  # its own prediction fed back


class Oracle(nn.Module):
    """Test-only: knows the true next frame of every (context, action) it will be asked about."""

    def __init__(self, windows: Windows) -> None:
        super().__init__()
        self.table: dict[tuple[bytes, int], np.ndarray] = {}
        for context, actions, truth in zip(windows.context, windows.actions, windows.truth):
            frames = list(context)
            for action, frame in zip(actions, truth):
                self.table[(np.stack(frames[-4:]).tobytes(), int(action))] = frame
                frames.append(frame)

    def forward(
        self, frames: Tensor, actions: Tensor, noise_level: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        stored = (frames * 255).round().to(torch.uint8).numpy()  # (B, T, H, W)
        # Unknown pairs (the shuffled-action rollouts) get the last frame: only the true-action score is asserted.
        nexts = [self.table.get((f.tobytes(), int(a)), f[-1]) for f, a in zip(stored, actions)]
        return torch.from_numpy(np.stack(nexts)).float().div(255).unsqueeze(1)


def test_oracle_scores_zero_error_over_the_whole_horizon(small_dataset: Path) -> None:
    """Catches misaligned truth and predictions (e.g. scoring step k against frame k+1)."""
    windows = windows_from_dataset(ShardedDataset(small_dataset), horizon=8, count=12)
    errors = evaluate(Oracle(windows), windows, batch_size=5, device=torch.device("cpu"), seed=0, game="Pong")
    assert windows.ball is None and "ball" not in errors  # a recorded dataset has no RAM: no ball to score
    assert errors["model"]["mse"].shape == (12, 8)
    assert np.all(errors["model"]["mse"] == 0) and np.allclose(errors["model"]["ssim"], 1, atol=1e-5)
    assert errors["copy_last"]["mse"][:, -1].mean() > 0  # the frames do change: zero is not trivial
    curves = summarise(errors)
    assert curves["mse"]["model"] == [0.0] * 8 and curves["psnr"]["model"][0] == 120.0  # capped: MSE floored at 1e-12
    ratio, gap = headline(curves, horizon=8)
    assert ratio == {"1": 0.0} and set(gap) == {"1"}
    assert errors["model"]["changed_recall"].shape == (12, 8, 2)  # a ratio's parts per case and step
    for name in ("changed_recall", "changed_precision", "motion", "objects"):  # right: 1 wherever something changed
        assert all(v is None or v == pytest.approx(1) for v in curves[name]["model"]), name
    assert any(v is not None for v in curves["changed_recall"]["model"])
    assert curves["changed_recall"]["model"][0] == 1.0  # step 1 compared with the last context frame, as the truth
    # Copying never changes a pixel: recall and motion 0, precision has nothing to count.
    assert curves["changed_recall"]["copy_last"] == [0.0] * 8 and curves["motion"]["copy_last"] == [0.0] * 8
    assert curves["changed_precision"]["copy_last"] == [None] * 8
    assert alive(curves, horizon=8) == {name: {"1": curves[name]["model"][0]} for name in ALIVE}


@pytest.mark.slow  # starts eval as a process
def test_eval_command_writes_every_file(short_run, tmp_path: Path) -> None:
    cfg, result = short_run
    checkpoint = Path(result["run_dir"]) / "checkpoints" / "best.pt"
    out = run(
        [
            *EVAL,
            "--checkpoint",
            str(checkpoint),
            "--game",
            "ALE/Pong-v5",
            "--episodes",
            "1",
            "--starts_per_episode",
            "4",
            "--horizon",
            "12",
            "--videos",
            "2",
            "--out_dir",
            str(tmp_path),
        ]
    )
    assert out.returncode == 0, out.stderr
    (eval_dir,) = tmp_path.iterdir()
    assert eval_dir.name.endswith("_Pong_eval") and "model MSE / copy-last MSE" in out.stdout
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert (
        summary["game"] == "Pong" and summary["horizon"] == 12 and summary["starts"] == 4 and summary["episodes"] == 1
    )
    for metric in ("mse", "psnr", "ssim"):
        assert {len(v) for v in summary[metric].values()} == {12} and set(summary[metric]) == {
            "model",
            "copy_last",
            "model_shuffled_actions",
        }
        image = iio.imread(eval_dir / "plots" / f"{metric}_vs_horizon.png")
        assert image.shape[:2] == (500, 800)
    assert set(summary["mse_ratio_to_copy"]) == {"1", "10"} and set(summary["action_gap"]) == {"1", "10"}
    assert set(summary["alive"]) == {*ALIVE, "ball_present", "ball_distance"} and all(
        set(at) == {"1", "10"} for at in summary["alive"].values()
    )
    assert summary["alive"]["motion"]["10"] == summary["motion"]["model"][9] and "alive at h=1/10" in out.stdout
    # Pong's ball, from the played episodes' RAM: its block, its figures in the alive block, the report and the plots
    assert set(summary["ball"]) == {"present", "distance", "counted", "real"} and len(summary["ball"]["real"]) == 12
    assert summary["alive"]["ball_present"]["10"] == summary["ball"]["present"]["model"][9]
    assert "ball at h=1/10  shown" in out.stdout and (eval_dir / "plots" / "ball_present_vs_horizon.png").is_file()
    assert summary["mse_ratio_to_copy"]["1"] == summary["mse"]["model"][0] / summary["mse"]["copy_last"][0]
    with open(eval_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert float(rows[0]["model_mse"]) == pytest.approx(summary["mse"]["model"][0], rel=1e-5)
    for suffix in ("mp4", "gif"):
        videos = sorted((eval_dir / "videos").glob(f"*.{suffix}"))
        assert len(videos) == 2
        frames = np.stack([f[..., :3] for f in iio.imiter(videos[0])])
        assert frames.shape[0] == 12 and frames.shape[1] >= 84 and frames.shape[2] >= 3 * 84


@pytest.mark.slow  # a full evaluation
def test_evaluate_checkpoint_returns_what_it_writes(short_run, tmp_path: Path) -> None:
    """The function benchmarks and tests call (no argparse): its result is summary.json, plus where it wrote."""
    _, result = short_run
    checkpoint = Path(result["run_dir"]) / "checkpoints" / "last.pt"
    summary = evaluate_checkpoint(
        EvalConfig(checkpoint, "Pong", episodes=1, starts_per_episode=3, horizon=4, videos=1, out_dir=tmp_path)
    )
    written = json.loads((summary["out_dir"] / "summary.json").read_text())
    assert written == {k: v for k, v in summary.items() if k not in ("out_dir", "paths")}
    assert summary["starts"] == 3 and len(summary["ssim"]["model"]) == 4 and summary["paths"]["video_0_gif"].is_file()


@pytest.mark.slow  # three evaluations
def test_an_evaluation_plays_and_scores_what_it_was_asked(
    short_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the reward and end scoring playing 16 more episodes than asked (the smallest evaluation took 250 s on 2
    cores): by default it scores the requested episodes, more only when asked, none with --event_episodes 0."""
    import src.eval as evaluation

    played = []
    real_play = evaluation.play_episodes
    monkeypatch.setattr(
        evaluation, "play_episodes", lambda settings, count, *a: played.append(count) or real_play(settings, count, *a)
    )
    _, result = short_run
    args = dict(checkpoint=result["run_dir"], episodes=1, starts_per_episode=2, horizon=3, videos=0, event_horizon=2)
    summary = evaluate_checkpoint(EvalConfig(**args, out_dir=tmp_path / "a"))
    assert played == [1] and summary["events"]["episodes"] == 1 and summary["events"]["rollouts"] > 0
    summary = evaluate_checkpoint(EvalConfig(**args, event_episodes=2, out_dir=tmp_path / "b"))
    assert played[-1] == 2 and summary["events"]["episodes"] == 2
    summary = evaluate_checkpoint(EvalConfig(**args, event_episodes=0, out_dir=tmp_path / "c"))
    assert played[-1] == 1 and "events" not in summary and "return_fidelity" not in summary


def test_an_evaluation_of_played_pong_scores_the_ball(tmp_path: Path) -> None:
    """Windows of played Pong carry the real ball; the oracle shows it wherever the real one is in the searched area,
    within find_ball's 1.5 px; the block reaches summary.json's alive block, metrics.csv, the plots and the report.
    Windows of a recorded dataset (no RAM) have no ball, and nothing is scored."""
    episodes = play_episodes(EnvSettings("Pong", max_episode_steps=80), 2, seed=5, ball=True)
    windows = windows_from_episodes(episodes, horizon=6, starts_per_episode=4)
    assert windows.ball.shape == (8, 6, 2)
    errors = evaluate(Oracle(windows), windows, batch_size=5, device=torch.device("cpu"), seed=0, game="Pong")
    curves, ball = summarise(errors), ball_block(errors["ball"])
    assert set(ball["present"]) == {"model", "copy_last", "model_shuffled_actions"} and len(ball["counted"]) == 6
    assert sum(ball["real"]) > 20 and ball["counted"] == ball["real"]  # every real ball shown, and measured
    assert ball["present"]["model"] == [1.0] * 6 and max(ball["distance"]["model"]) <= 1.5
    assert max(ball["distance"]["copy_last"]) > 1.5  # the ball moves: copying leaves it behind
    summary = {"game": "Pong", "starts": 8, **curves, "alive": alive(curves, 6, ball=ball), "ball": ball}
    assert summary["alive"]["ball_present"] == {"1": 1.0} and summary["alive"]["ball_distance"]["1"] <= 1.5
    (tmp_path / "plots").mkdir()
    paths = write_outputs(tmp_path, summary, curves, Oracle(windows), windows, videos=0, device=torch.device("cpu"))
    assert iio.imread(paths["ball_distance"]).shape[:2] == (500, 800) and paths["ball_present"].is_file()
    with open(tmp_path / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["model_ball_present"]) == 1.0 and int(row["ball_counted"]) == ball["counted"][0]
    ratio, gap = headline(curves, 6)
    result = {**summary, "mse_ratio_to_copy": ratio, "action_gap": gap, "paths": paths, "out_dir": tmp_path}
    assert (
        "ball at h=1  shown 1.00 of the steps with the real ball in the searched area (1 right), "
        f"{ball['distance']['model'][0]:.1f} px from it (0 right; on {ball['counted'][0]} cases)"
    ) in report(result).splitlines()
    assert wandb_scores(result)["eval/ball_present_h1"] == 1.0


def test_a_new_metric_is_one_registry_entry(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches a metric name hard-coded anywhere between the registry and the outputs: summary, CSV and plot."""
    monkeypatch.setitem(
        STEP_METRICS,
        "max_error",
        StepMetric("largest pixel error", of_the_step(lambda p, t: (p - t).abs().flatten(1).amax(1))),
    )
    windows = windows_from_dataset(ShardedDataset(small_dataset), horizon=5, count=3)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8), num_actions=6)
    curves = summarise(evaluate(model, windows, batch_size=3, device=torch.device("cpu"), seed=0))
    assert len(curves["max_error"]["copy_last"]) == 5 and max(curves["max_error"]["copy_last"]) > 0
    (tmp_path / "plots").mkdir()
    write_outputs(
        tmp_path, {"game": "Pong", "starts": 3, **curves}, curves, model, windows, videos=0, device=torch.device("cpu")
    )
    assert json.loads((tmp_path / "summary.json").read_text())["max_error"] == curves["max_error"]
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["copy_last_max_error"]) == pytest.approx(
            curves["max_error"]["copy_last"][0], rel=1e-5
        )
    assert iio.imread(tmp_path / "plots" / "max_error_vs_horizon.png").shape[:2] == (500, 800)


@pytest.mark.slow  # starts eval as a process
def test_eval_bad_input_exits_2(short_run, tmp_path: Path) -> None:
    _, result = short_run
    checkpoint = str(Path(result["run_dir"]) / "checkpoints" / "last.pt")
    assert "differs from the checkpoint's game Pong" in error_line(
        run([*EVAL, "--checkpoint", checkpoint, "--game", "Breakout"])
    )
    from src.eval import main

    evaluate = lambda argv: run_main(main, argv)  # noqa: E731 (the refusals below in this process: one real one above)
    assert "--horizon must be >= 1" in error_line(
        evaluate(["--checkpoint", checkpoint, "--game", "Pong", "--horizon", "0"])
    )
    assert "not found" in error_line(evaluate(["--checkpoint", str(tmp_path / "none.pt"), "--game", "Pong"]))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(Path(checkpoint).read_bytes()[:1000])
    assert "cannot be loaded" in error_line(evaluate(["--checkpoint", str(corrupt), "--game", "Pong"]))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert "not a checkpoint of this project" in error_line(evaluate(["--checkpoint", str(foreign), "--game", "Pong"]))
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


# ------------------------------------------------------------------------ run folders, W&B, progress, eval.log


def test_a_run_folder_stands_for_its_best_checkpoint_else_its_last(tmp_path: Path) -> None:
    """Catches a run folder resolved to the wrong file (last.pt over best.pt), or a folder without checkpoints let
    through to a confusing error."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    assert find_checkpoint(run_dir, "weights") == run_dir / "checkpoints" / "last.pt"
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"")
    assert find_checkpoint(run_dir, "weights") == run_dir / "checkpoints" / "best.pt"
    assert find_checkpoint(run_dir / "checkpoints", "weights") == run_dir / "checkpoints" / "best.pt"
    assert (
        find_checkpoint(run_dir / "checkpoints" / "last.pt", "weights") == run_dir / "checkpoints" / "last.pt"
    )  # a file as it is
    assert find_checkpoint(tmp_path / "none.pt", "weights") == tmp_path / "none.pt"  # read_checkpoint says 'not found'
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(
        UserError, match=r"^--checkpoint '.*empty' is a folder without checkpoints/best.pt or checkpoints/last.pt"
    ):
        find_checkpoint(tmp_path / "empty", "weights")


@pytest.mark.slow  # a full evaluation
def test_eval_of_a_run_folder_without_game_prints_progress_and_keeps_its_log(
    short_run, tmp_path: Path, wandb_env: Path, monkeypatch
) -> None:
    """The newcomer's command: `eval --checkpoint runs/<run>`. Catches --game still required, the run folder not
    taken to its best.pt, no progress on stderr, an eval.log that misses what was printed, and the default W&B mode
    failing without a login (it says so in one line and logs nothing)."""
    monkeypatch.delenv("WANDB_MODE")
    run_dir = Path(short_run[1]["run_dir"])
    out = run(
        [
            *EVAL,
            "--checkpoint",
            str(run_dir),
            "--episodes",
            "1",
            "--starts_per_episode",
            "3",
            "--horizon",
            "4",
            "--videos",
            "0",
            "--batch_size",
            "2",
            "--out_dir",
            str(tmp_path / "out"),
        ]
    )
    assert out.returncode == 0, out.stderr
    (eval_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "best.pt") and summary["game"] == "Pong"
    assert "rollouts: 100%" in out.stderr and "3/3" in out.stderr  # the bar over the rollouts, on stderr
    log = (eval_dir / "eval.log").read_text()
    assert log == out.stdout  # every printed line, those from before the folder existed included
    assert NO_LOGIN.format(setting="--wandb_mode") in log.splitlines() and "model MSE / copy-last MSE" in log
    assert not (eval_dir / "wandb").exists()


@pytest.mark.slow  # an evaluation logged to W&B offline
def test_eval_wandb_run_joins_the_training_runs_project_and_group(short_run, tmp_path: Path, wandb_env: Path) -> None:
    """Catches an evaluation logged to a project of its own, unlinked to the run it scores, or without its config."""
    cfg, result = short_run
    run_dir = Path(result["run_dir"])
    summary = evaluate_checkpoint(
        EvalConfig(
            run_dir, episodes=1, starts_per_episode=2, horizon=3, videos=0, out_dir=tmp_path / "a", wandb_mode="offline"
        )
    )
    run = offline_run(summary["out_dir"])
    assert (run.project, run.run_group, run.job_type) == (cfg.experiment.wandb.project, run_dir.name, "eval")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["checkpoint_config"]["model"]["channels"] == [8, 16] and config["trained"]["run"] == run_dir.name
    assert config["trained"]["step"] == read_checkpoint(run_dir / "checkpoints" / "best.pt")["step"]
    other = evaluate_checkpoint(
        EvalConfig(
            run_dir,
            episodes=1,
            starts_per_episode=2,
            horizon=3,
            videos=0,
            out_dir=tmp_path / "b",
            wandb_mode="offline",
            wandb_project="elsewhere",
            wandb_entity="someone",
        )
    )
    assert (offline_run(other["out_dir"]).project, offline_run(other["out_dir"]).entity) == ("elsewhere", "someone")


@pytest.mark.slow  # waits out W&B's init timeout
def test_eval_with_a_key_but_no_network_logs_offline_within_the_runs_init_timeout(
    short_run, tmp_path: Path, wandb_env: Path, monkeypatch
) -> None:
    """Catches eval hanging at W&B's set-up (a key, WANDB_MODE unset, a server that never answers): it uses the
    training run's experiment.wandb.init_timeout, then logs offline into its own folder and says so, in eval.log too."""
    run_dir = tmp_path / "run"
    shutil.copytree(
        Path(short_run[1]["run_dir"]), run_dir, ignore=shutil.ignore_patterns("wandb", ".lock", "videos", "images")
    )
    state = read_checkpoint(run_dir / "checkpoints" / "best.pt")
    state["config"]["experiment"]["wandb"]["init_timeout"] = 1.0
    save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
    with silent_server(monkeypatch):
        summary = evaluate_checkpoint(
            EvalConfig(
                run_dir,
                "Pong",
                episodes=1,
                starts_per_episode=2,
                horizon=3,
                videos=0,
                out_dir=tmp_path / "evals",
                wandb_mode="auto",
            )
        )
    (sync_dir,) = (summary["out_dir"] / "wandb").glob("offline-run-*")
    lines = [line for line in (summary["out_dir"] / "eval.log").read_text().splitlines() if line.startswith("W&B:")]
    assert (
        len(lines) == 1
        and lines[0].startswith("W&B: the online run did not start within 1 s")
        and str(sync_dir) in lines[0]
    )


@pytest.mark.slow  # starts eval as a process
def test_eval_of_a_folder_without_checkpoints_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    line = error_line(run([*EVAL, "--checkpoint", str(tmp_path / "run"), "--out_dir", str(tmp_path / "out")]))
    assert line == (
        f"error: --checkpoint '{tmp_path / 'run'}' is a folder without checkpoints/best.pt or checkpoints/last.pt; "
        "pass a run folder written by src.train (runs/<run>) or a .pt file"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not any((tmp_path / "run").iterdir())


def offline_run(eval_dir: Path):
    """The RunRecord of the one offline W&B run under eval_dir."""
    (sync_dir,) = (eval_dir / "wandb").glob("offline-run-*")
    (record,) = [
        r.run for r in read_records(next(sync_dir.glob("run-*.wandb"))) if r.WhichOneof("record_type") == "run"
    ]
    return record


@pytest.mark.slow  # starts eval as a process
def test_eval_with_a_bad_wandb_mode_in_the_environment_is_one_line(short_run, tmp_path: Path, monkeypatch) -> None:
    """Catches a WANDB_MODE that wandb would reject (a traceback from wandb.init after the work) let through to the
    end."""
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    line = error_line(run([*EVAL, "--checkpoint", short_run[1]["run_dir"], "--out_dir", str(tmp_path / "out")]))
    assert line == "error: WANDB_MODE must be online, offline or disabled, got 'sometimes'; fix or unset it"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ rewards and ends


def event_model(reward_sign: float, end_logit: float) -> nn.Module:
    """A tiny model whose event head always says `reward_sign` and an end logit of `end_logit` (its last layer's
    weights zeroed, its biases set)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[8, 16], action_embed_dim=8, feedback="uint8"), 6)
    with torch.no_grad():
        model.events.out.weight.zero_()
        model.events.out.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, end_logit]))
        model.events.out.bias[int(reward_sign) + 1] = 9.0
    return model


def synthetic_episode(rewards: list[float], seed: int) -> Steps:
    """An episode of len(rewards) steps of random frames that ends at its last step, with these rewards."""
    n, rng = len(rewards), np.random.default_rng(seed)
    return Steps(
        obs=rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8),
        action=rng.integers(0, 6, n),
        next_obs=rng.integers(0, 256, (n, 1, 84, 84), dtype=np.uint8),
        done=np.arange(n) == n - 1,
        reward=np.array(rewards, dtype=np.float32),
        episode=np.zeros(n, dtype=np.int64),
    )


def test_event_cases_reach_every_reward_and_end_at_every_step_ahead() -> None:
    """Catches event rollouts that miss an event at some step ahead (a recall measured on nothing) or run past an
    episode's end: each of the 3 rewards and the end is reached at every step ahead."""
    rewards = [0.0] * 30
    rewards[12], rewards[20], rewards[29] = 1.0, -1.0, -1.0  # the last also the end
    episode = synthetic_episode(rewards, 0)
    windows, ends, valid = event_cases([episode], horizon=5)
    assert windows.context.shape[1:] == (4, 84, 84)
    for h in range(5):
        assert (ends[:, h] & valid[:, h]).sum() >= 1  # the end, reached h + 1 steps ahead
        assert (windows.rewards[:, h][valid[:, h]] == 1.0).sum() >= 1 and (
            windows.rewards[:, h][valid[:, h]] == -1.0
        ).sum() >= 2
    assert not (ends[:, :-1] & valid[:, :-1] & valid[:, 1:]).any()  # nothing is scored after an end
    assert (
        event_cases([synthetic_episode([0.0] * 30, 0)][:0], horizon=5) is None
    )  # nothing to score: said before the work


def test_event_curves_count_what_the_head_says() -> None:
    """Catches rates computed on the wrong steps: a head that always says +1 and always says 'ends' is right on the
    +1 rewards only, false on every quiet step, and finds every end with the precision of ends among scored steps."""
    rewards = [0.0] * 25
    rewards[5], rewards[10] = 1.0, 2.0  # the end (step 24) without a reward
    episodes = [synthetic_episode(rewards, 1), synthetic_episode(rewards, 2)]
    curves = event_curves(event_model(+1, 9.0), event_cases(episodes, 4), 2, 64, torch.device("cpu"), Feedback("uint8"))
    assert curves["episodes"] == 2 and curves["horizon"] == 4
    for h in range(4):
        assert curves["reward_steps"][h] >= 4 and curves["reward_sign_accuracy"][h] == 1.0
        assert curves["false_reward_rate"][h] == 1.0 and curves["end_recall"][h] == 1.0
        assert curves["real_ends"][h] == 2
        assert curves["end_precision"][h] == pytest.approx(2 / curves["predicted_ends"][h])
    quiet = event_curves(event_model(0, -9.0), event_cases(episodes, 4), 2, 64, torch.device("cpu"), Feedback("uint8"))
    assert quiet["false_reward_rate"] == [0.0] * 4 and quiet["reward_sign_accuracy"] == [0.0] * 4
    assert (
        quiet["end_recall"] == [0.0] * 4 and quiet["end_precision"] == [None] * 4
    )  # no end predicted: nothing to count


def test_return_fidelity_compares_imagined_and_real_returns() -> None:
    """Catches a return computed on raw rewards instead of their signs, or a difference with the wrong sign."""
    imagined = np.array([[1, 0, -1], [0, 0, 0], [-1, -1, 0]], dtype=np.float32)
    real = np.array([[2.0, 0, 0], [0, -3.0, 0], [-1, -1, 0]], dtype=np.float32)  # signs' sums: 1, -1, -2
    r = return_fidelity(imagined, real)
    assert r["real_mean"] == pytest.approx(-2 / 3) and r["imagined_mean"] == pytest.approx(-2 / 3)
    assert r["difference_mean"] == pytest.approx(0.0) and r["difference_abs_mean"] == pytest.approx(2 / 3)
    assert r["rollouts"] == 3 and r["steps"] == 3


def test_the_alive_block_is_reported_and_logged_without_its_nulls() -> None:
    """The closing report prints the "alive" block on one line ('-' where nothing was counted), and W&B gets each of
    its numbers as eval/<metric>_h<step> (a null is not a number to log)."""
    at = {
        "changed_recall": {"1": 0.9, "10": 0.5},
        "changed_precision": {"1": 0.8, "10": None},
        "motion": {"1": 1.0, "10": 0.25},
        "objects": {"1": 1.0, "10": 1.75},
    }
    result = {
        "mse_ratio_to_copy": {"1": 0.5, "10": 0.9},
        "action_gap": {"1": 1.5},
        "sharpness": {"model": [1.0] * 10},
        "alive": at,
        "paths": {"mse": "plots/mse_vs_horizon.png"},
        "out_dir": "out",
    }
    assert (
        "alive at h=1/10 (1 right; recall and motion 0: frozen)  changed recall 0.90/0.50, changed precision "
        "0.80/-, motion 1.00/0.25, objects 1.00/1.75" in report(result).splitlines()
    )
    scores = wandb_scores(result)
    assert scores["eval/changed_recall_h10"] == 0.5 and scores["eval/objects_h10"] == 1.75
    assert "eval/changed_precision_h10" not in scores and scores["eval/changed_precision_h1"] == 0.8
