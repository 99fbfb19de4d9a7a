"""Every trading architecture by its config name, and the one function that builds a model reading
named features (trainers, RL, checkpoints and the registry all build through it)."""

from __future__ import annotations

from hrm_core.core.config import HRMConfig
from hrm_core.model.flat import FlatTrader
from hrm_core.model.gru import GRUTrader
from hrm_core.model.hmtr import HMTRGRUTrader, HMTRTrader
from hrm_core.model.hrm import HRMTrader
from hrm_core.model.trader import TraderBase, TraderShape

ARCHITECTURES: dict[str, type[TraderBase]] = {
    "hrm": HRMTrader,
    "flat": FlatTrader,
    "gru": GRUTrader,
    "hmtr": HMTRTrader,
    "hmtr_gru": HMTRGRUTrader,
}


def build_model_for(
    config: HRMConfig, strategic_names: tuple[str, ...], tactical_names: tuple[str, ...]
) -> TraderBase:
    """The configured architecture (``model.architecture``) reading the named features (in that order)."""
    hf = config.hierarchical_features
    shape = TraderShape(
        len(strategic_names), len(tactical_names), hf.high_level_lookback, hf.low_level_lookback
    )
    model = ARCHITECTURES[config.model.architecture](config.model, shape)
    model.feature_names = (tuple(strategic_names), tuple(tactical_names))
    return model
