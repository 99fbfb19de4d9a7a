"""Reinforcement learning on the engine's vector env: one policy interface for every model, rewards,
PPO, GRPO and HybridGRPO (one file each), the fine-tuning runner and the H-MTR master–worker
training. Independent of the supervised trainer and of the backtester."""
