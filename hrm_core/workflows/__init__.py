"""The recipes: prepare data and train a run, train and backtest against the baselines, evaluate
folds × seeds. They combine training, RL and simulation, which never import each other."""
