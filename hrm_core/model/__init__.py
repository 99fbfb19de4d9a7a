"""The Hierarchical Reasoning Model adapted to trading and its baselines: layers, recurrent cores,
heads, ACT, the policy's exposure rules, the streaming agent and the torch-free serving model."""
