"""Backtests of given models and rule baselines through the engine, their metrics, reports and the
promotion rule. Never trains: the recipes that train and then backtest are in ``workflows``."""
