"""The agent that learns inside a world model (src/agent/): the returns it learns from, learning itself (the rewarded
action becomes the likely one), the planner finding the paid action, a snapshot of the real game replaying byte-equal,
the training command with its run folder and resume, the real-game evaluation, and bad input as one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from src.agent import evaluate as agent_evaluate
from src.agent.__main__ import main as agent_main
from src.agent.learner import Batch, lambda_returns, update
from src.agent.planner import Planner, PlannerSettings
from src.agent.policy import ActorCritic
from src.config import AgentConfig, ConfigError, load_config
from src.envs.atari import EnvSettings
from src.envs.game import Game
from src.imagination.games import CheckpointWorld
from src.models.rollout import Feedback
from tests.conftest import ROOT, error_line, run_main
from tests.test_imagination import tiny_model


def batch(rewards: list[list[float]], values: list[list[float]], continues: list[list[float]] | None = None) -> Batch:
    r = torch.tensor(rewards)
    k, b = r.shape
    return Batch(
        obs=torch.zeros(k + 1, b, 4, 84, 84, dtype=torch.uint8),
        actions=torch.zeros(k, b, dtype=torch.long),
        log_probs=torch.zeros(k, b),
        values=torch.tensor(values),
        rewards=r,
        continues=torch.tensor(continues) if continues else torch.ones(k, b),
        weights=torch.ones(k, b),
    )


def test_lambda_returns_by_hand() -> None:
    # one game, 2 steps: G_1 = r_1 + g V_2; G_0 = r_0 + g ((1 - l) V_1 + l G_1)
    b = batch([[1.0], [0.0]], [[0.5], [0.2], [2.0]])
    g, lam = 0.9, 0.5
    g1 = 0.0 + g * 2.0
    g0 = 1.0 + g * ((1 - lam) * 0.2 + lam * g1)
    torch.testing.assert_close(lambda_returns(b, g, lam)[:, 0], torch.tensor([g0, g1]))
    # an end at the first step: nothing after it counts
    ended = batch([[1.0], [5.0]], [[0.5], [0.2], [2.0]], [[0.0], [1.0]])
    assert lambda_returns(ended, g, lam)[0, 0].item() == pytest.approx(1.0)
    # lambda 1: the discounted rewards plus the discounted last value
    assert lambda_returns(b, g, 1.0)[0, 0].item() == pytest.approx(1.0 + g * 0.0 + g**2 * 2.0)


@pytest.mark.parametrize("learner", ["ppo", "actor_critic"])
def test_the_rewarded_action_becomes_the_likely_one(learner: str) -> None:
    """Batches where action 2 pays +1 and the others nothing: both learners move the policy to action 2."""
    torch.manual_seed(0)
    policy = ActorCritic(6)
    cfg = AgentConfig(learner=learner, lr=1e-3, horizon=4, num_envs=32)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    frames = torch.randint(0, 255, (5, 32, 4, 84, 84), dtype=torch.uint8)
    probs = lambda: torch.softmax(policy(frames[0])[0], -1)[:, 2].mean().item()  # noqa: E731
    before = probs()
    for _ in range(15):
        with torch.no_grad():
            logits, values = policy(frames.flatten(0, 1))
            actions = torch.multinomial(torch.softmax(logits, -1), 1)[:, 0]
            log_probs = torch.log_softmax(logits, -1).gather(1, actions[:, None])[:, 0]
        shaped = lambda x: x.view(5, 32)  # noqa: E731
        actions, log_probs, values = shaped(actions), shaped(log_probs), shaped(values)
        b = Batch(
            frames, actions[:4], log_probs[:4], values, (actions[:4] == 2).float(), torch.ones(4, 32), torch.ones(4, 32)
        )
        update(policy, optimizer, b, cfg)
    assert before == pytest.approx(1 / 6, abs=0.02)
    assert probs() > 0.5, (before, probs())


class PaidAction(nn.Module):
    """An event head that pays +1 (almost surely) for one action, nothing for the others, and never ends a game."""

    def __init__(self, paid: int) -> None:
        super().__init__()
        self.paid = paid

    def forward(self, context: torch.Tensor, next_frame: torch.Tensor, actions: torch.Tensor):
        logits = torch.zeros(len(actions), 3)
        logits[:, 2] = torch.where(actions == self.paid, 10.0, -10.0)
        return logits, torch.full((len(actions),), -20.0)


def test_the_planner_finds_the_paid_action() -> None:
    model = tiny_model()
    model.events = PaidAction(paid=4)
    world = CheckpointWorld(
        model, 6, Feedback("uint8"), [str(a) for a in range(6)], EnvSettings("Pong"), torch.device("cpu")
    )
    planner = Planner(world, PlannerSettings(decisions=2, repeat=2, population=24, iterations=2, elites=4))
    frames = np.random.default_rng(0).integers(0, 255, (4, 84, 84), dtype=np.uint8)
    scores = planner.scores(frames, np.array([[4, 4], [4, 0], [0, 0]]))
    assert scores[0] > scores[1] > scores[2] and scores[0] == pytest.approx(sum(0.985**k for k in range(4)), abs=1e-3)
    rng = np.random.default_rng(1)
    assert [planner.plan(frames, rng) for _ in range(5)] == [4] * 5
    # the action is held for `repeat` real steps, then planned again
    planner.reset()
    assert [planner.act(frames, rng) for _ in range(4)] == [4] * 4 and planner.left == 0


def test_a_snapshot_replays_the_real_game_byte_equal() -> None:
    game = Game(EnvSettings("Pong", repeat_action_probability=0.25))  # sticky actions: the emulator's RNG counts too
    game.reset(3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        game.step(int(rng.integers(6)))
    snapshot = game.snapshot()
    actions = rng.integers(6, size=150)
    first = [game.step(int(a)) for a in actions]
    game.restore(snapshot)
    again = [game.step(int(a)) for a in actions]
    game.close()
    assert all(np.array_equal(a.next_obs, b.next_obs) and a.reward == b.reward for a, b in zip(first, again))
    assert any(a.reward != 0 for a in first)  # the replayed stretch holds a point


def agent_args(world: Path, runs: Path, *extra: str) -> list[str]:
    return [
        f"agent.world_model={world}",
        "agent.num_envs=4",
        "agent.horizon=3",
        "agent.ppo_minibatches=2",
        "agent.log_every=1",
        "agent.save_every=2",
        f"experiment.runs_dir={runs}",
        "experiment.wandb.mode=disabled",
        *extra,
    ]


@pytest.mark.slow  # a tiny world model's training, then the agent's, then real Pong: seconds
def test_train_resume_and_evaluate_an_agent(short_run, tmp_path: Path) -> None:
    world_run = Path(short_run[1]["run_dir"])
    runs = tmp_path / "agents"
    result = run_main(agent_main, agent_args(world_run, runs, "agent.max_updates=3"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs.iterdir()
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    assert int(rows[-1]["imagined_steps"]) == 3 * 4 * 3
    assert all(np.isfinite(float(r["entropy"])) for r in rows)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["update"] == 3 and state["world_model"].endswith("best.pt")
    # resumed to 5 updates in its own folder: the rows go on, the counters too
    result = run_main(agent_main, [f"agent.resume={run_dir}", "agent.max_updates=5"])
    assert result.returncode == 0, result.stderr
    assert [int(r["update"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))] == [1, 2, 3, 4, 5]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["imagined_steps"] == 5 * 4 * 3
    # resuming a finished run asks for more updates, in one line
    assert "raise agent.max_updates" in error_line(run_main(agent_main, [f"agent.resume={run_dir}"]))
    line = error_line(
        run_main(agent_main, [f"agent.resume={run_dir}", "agent.max_updates=9", "agent.max_minutes=1e-6"])
    )
    assert "raise agent.max_minutes" in line

    summary = agent_evaluate.evaluate_agent(
        [
            "--agent", str(run_dir), "--episodes", "2", "--max_steps", "40", "--compare_every", "10",
            "--video_steps", "12", "--plan_population", "4", "--plan_iterations", "1", "--plan_decisions", "1",
            "--out_dir", str(tmp_path / "evals"), "--wandb", "disabled",
        ]
    )  # fmt: skip
    assert set(summary["policies"]) == {"agent", "random", "planner"}
    for r in summary["policies"].values():
        assert r["episodes"] == 2 and r["mean_length"] == 40 and len(r["returns"]) == 2
    assert summary["imagined_vs_real"]["checks"] == 2 * 3 and summary["imagined_vs_real"]["horizon"] == 15
    (out,) = (tmp_path / "evals").iterdir()
    assert json.loads((out / "summary.json").read_text())["game"] == "Pong"
    assert (out / "videos" / "agent_real_vs_imagined.mp4").stat().st_size > 0
    assert len(list(csv.DictReader(open(out / "episodes.csv")))) == 6


def test_bad_input_is_one_line(short_run, tmp_path: Path) -> None:
    world_run = Path(short_run[1]["run_dir"])
    assert "agent.world_model is required" in error_line(run_main(agent_main, [f"experiment.runs_dir={tmp_path}"]))
    line = error_line(run_main(agent_evaluate.main, ["--agent", str(world_run)]))
    assert "not an agent checkpoint" in line or "agent run folder" in line
    line = error_line(run_main(agent_evaluate.main, ["--agent", str(world_run / "checkpoints" / "best.pt")]))
    assert "not an agent checkpoint" in line
    assert "--policies" in error_line(
        run_main(agent_evaluate.main, ["--world_model", str(world_run), "--policies", "agent"])
    )
    assert "--plan_elites" in error_line(
        run_main(agent_evaluate.main, ["--world_model", str(world_run), "--plan_elites", "99"])
    )
    with pytest.raises(ConfigError, match="agent.learner"):
        load_config(ROOT / "config.yaml", ["agent.learner=dqn"])
    with pytest.raises(ConfigError, match="agent.ppo_minibatches"):
        load_config(ROOT / "config.yaml", ["agent.num_envs=2", "agent.horizon=2", "agent.ppo_minibatches=5"])


@pytest.mark.slow  # real Pong states and their replays: seconds
def test_action_effects_compares_each_action_imagined_and_real(short_run, capsys: pytest.CaptureFixture) -> None:
    from examples.action_effects import main as effects_main

    world_run = Path(short_run[1]["run_dir"])
    results = effects_main(["--checkpoint", str(world_run), "--starts", "3", "--horizons", "1,4", "--device", "cpu"])
    assert list(results) == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    for by_horizon in results.values():
        assert set(by_horizon) == {1, 4}
        for imagined, real in by_horizon.values():
            assert abs(imagined) <= 4 and abs(real) <= 4
            assert real * 3 == pytest.approx(round(real * 3))  # a mean of 3 whole reward sums
    assert "h4 imagined" in capsys.readouterr().out
