"""Every named code the project uses, in one place: the seed's actions, the trade exit reasons,
the training tasks, the fold parts and the market regimes. Modules import these names; nothing
else spells them out."""

from __future__ import annotations

ACTIONS = ("BUY_LONG", "SELL_SHORT", "CLOSE_LONG", "CLOSE_SHORT", "HOLD")
BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT, HOLD = range(len(ACTIONS))

EXIT_REASONS = ("", "signal", "stop", "target", "end")
EXIT_SIGNAL, EXIT_STOP, EXIT_TARGET, EXIT_END = range(1, len(EXIT_REASONS))

TASKS = ("trend", "mean_reversion", "breakout", "adverse")
PARTS = ("train", "validation", "test")
REGIMES = ("trending", "ranging", "volatile")
RL_ALGORITHMS = ("ppo", "grpo", "hybrid_grpo", "hmtr")  # RL after the curriculum (``hrm_core/rl``)

REGISTERED_MODEL = "hrm-trader"
"""The name every version of the trading model is registered under in MLflow."""
ALIAS_STAGING, ALIAS_PRODUCTION = "staging", "production"
"""Registry aliases: every new candidate, and the model that serves."""
