"""Reinforcement learning on the simulator: one policy interface for every model, the exposure
environment, rewards, PPO, GRPO and HybridGRPO (one file each), the fine-tuning runner and the
H-MTR master–worker training. Uses data, model and sim code; never the supervised trainer."""
