"""ModelConfig, the config's `model` section, in a module of its own: the variants (unet.py, oh2015.py, edm.py) and
their registry (world_model.py) all read it, and none of them need import another to get it."""

from __future__ import annotations

from dataclasses import dataclass, field

from src.models.diffusion import DiffusionConfig
from src.models.rollout import DEFAULT_FEEDBACK


@dataclass
class ModelConfig:
    """The config's `model` section: which variant (a key of MODELS) and its sizes. A new variant's setting goes
    here."""

    name: str = "unet_film"  # a key of MODELS
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # per resolution level, finest first
    blocks_per_level: int = 1  # residual blocks at each level of the encoder and the decoder
    action_embed_dim: int = 64  # size of the learned action embedding that conditions every level
    hidden_dim: int = 1024  # oh2015 only: width of the fully connected code and of the action-multiplied factors
    feedback: str = DEFAULT_FEEDBACK  # how a prediction re-enters the context in rollouts: palette, uint8 or float
    palette_size: int = 16  # palette feedback: how many grey levels the palette has
    palette: list[int] | None = None  # palette feedback or output: its grey levels (0-255, increasing); null: training
    # fills in the palette_size commonest levels of the training frames, and checkpoints keep them
    output: str = "residual"  # U-Nets: residual (the last frame plus a regressed change) or palette (per pixel, a
    # classification over the palette's levels; the prediction is the most likely level, as SimPLe's 256-way softmax)
    context_noise: float = 0.0  # U-Nets: in training, Gaussian noise of a level drawn in [0, this] on the context
    # frames, the level given to the model beside the action (0: off; at test time the level is 0)
    events: bool = True  # also predict each step's reward sign and whether the episode ends (model.events, a small
    # network of its own beside every variant: src/models/events.py); false: frames only, as checkpoints from before it
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # edm only: noise levels and sampler
