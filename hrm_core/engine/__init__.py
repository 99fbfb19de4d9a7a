"""The one PnL engine: fills, costs, positions and equity bar by bar (numba), and the gym and vector
environments that step it. Backtests, RL, paper trading and the loss's torch twin agree with it."""
