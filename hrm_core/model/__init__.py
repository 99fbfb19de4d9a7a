"""The Hierarchical Reasoning Model adapted to trading: layers, recurrent core, heads, ACT, agent."""
