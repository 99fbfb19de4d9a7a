"""Trading simulation: execution model, environments, backtester, metrics, baselines, reports."""
