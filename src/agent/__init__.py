"""An agent that learns inside a world model and plays the real game (docs/agent.md).

policy.py the network (frames in, actions and a value out); learner.py imagined rollouts and the updates (PPO or
DIAMOND's actor-critic); loop.py the training run (python -m src.agent); checkpoint.py what an agent run saves;
planner.py planning in the model (CEM); evaluate.py scoring in the real game (python -m src.agent.evaluate)."""
