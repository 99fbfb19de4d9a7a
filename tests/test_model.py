"""HRM model: one-step gradient, O(1) activation memory, ACT halting, heads, exposure → actions and
the agent."""

import numpy as np
import pandas as pd
import pytest
import torch

from hrm_core.core.config import HRMConfig, ModelConfig, PolicyConfig, TradingConfig
from hrm_core.core.vocabulary import BUY_LONG, CLOSE_LONG, CLOSE_SHORT, HOLD, SELL_SHORT
from hrm_core.model.act import run_segments
from hrm_core.model.agent import HRMTradingAgent
from hrm_core.model.exposure import (
    action_of,
    benchmark_exposure,
    decide_exposure,
    execute_path,
    exposure_cap,
    next_position,
)
from hrm_core.model.hrm import HRMTrader
from hrm_core.model.trader import MarketInputs, TraderShape

HIGH, LOW, N_STRATEGIC, N_TACTICAL = 40, 12, 5, 6
SHAPE = TraderShape(N_STRATEGIC, N_TACTICAL, HIGH, LOW)


def make_model(**overrides) -> HRMTrader:
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, num_heads=4, H_layers=1, L_layers=1, h_pool=10, **overrides)
    model = HRMTrader(config, SHAPE)
    with torch.no_grad():  # a non-zero signal head, so every output depends on the input
        model.heads.tilt.weight.normal_(0.0, 0.3)
    return model


def make_inputs(batch: int = 6, seed: int = 1) -> MarketInputs:
    g = torch.Generator().manual_seed(seed)
    return MarketInputs(
        strategic=torch.randn(batch, HIGH, N_STRATEGIC, generator=g),
        tactical=torch.randn(batch, LOW, N_TACTICAL, generator=g),
    )


def output_loss(out) -> torch.Tensor:
    """A scalar that every trained output feeds."""
    return (
        out.tilt_logit.pow(2).sum()
        + out.up_logit.sum()
        + out.log_volatility.sum()
        + out.regime_probs[:, 0].sum()
    )


def parameter_grads(model: HRMTrader, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_one_step(model: HRMTrader, inputs: MarketInputs) -> torch.Tensor:
    """Every cycle with gradient enabled, but the states entering the last L and the last H update
    detached: what the one-step gradient claims to compute."""
    x_H, x_L = model.embed(inputs)
    carry = model.initial_carry(inputs.batch)
    z_H, z_L = carry.z_H, carry.z_L
    for h in range(model.H_cycles):
        for step in range(model.L_cycles):
            if h == model.H_cycles - 1 and step == model.L_cycles - 1:
                z_L, z_H = z_L.detach(), z_H.detach()
            z_L = model.L(z_L, x_L + z_H.mean(1, keepdim=True))
        if h == model.H_cycles - 1:
            z_L_in = z_L
            z_H = model.H(z_H.detach(), x_H + z_L_in.mean(1, keepdim=True))
        else:
            z_H = model.H(z_H, x_H + z_L.mean(1, keepdim=True))
    return output_loss(model.decide(z_H, z_L))


def segment_loss(model: HRMTrader, inputs: MarketInputs) -> torch.Tensor:
    _, out = model.segment(model.initial_carry(inputs.batch), inputs)
    return output_loss(out)


def test_one_step_gradient_only_flows_through_the_last_l_and_h_updates():
    inputs = make_inputs()
    model = make_model(H_cycles=2, L_cycles=3, gradient="one_step")
    one_step = parameter_grads(model, segment_loss(model, inputs))
    reference = parameter_grads(model, reference_one_step(model, inputs))
    assert one_step.keys() == reference.keys()
    for name in one_step:
        torch.testing.assert_close(one_step[name], reference[name], rtol=1e-5, atol=1e-7)
    full = make_model(H_cycles=2, L_cycles=3, gradient="full")
    full_grads = parameter_grads(full, segment_loss(full, inputs))
    differs = [n for n in one_step if not torch.allclose(one_step[n], full_grads[n], rtol=1e-4, atol=1e-6)]
    assert differs, "full backpropagation should give different gradients than the one-step approximation"


def saved_activation_bytes(model: HRMTrader, inputs: MarketInputs) -> int:
    """Bytes of every tensor autograd keeps for the backward pass of one training segment."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not isinstance(tensor, torch.nn.Parameter):
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        segment_loss(model, inputs).backward()
    return total


def test_one_step_memory_is_flat_in_the_cycles_while_full_backprop_grows():
    inputs = make_inputs()
    memory = {}
    for mode in ("one_step", "last_cycle", "full"):
        for cycles in ((1, 3), (3, 7)):
            model = make_model(H_cycles=cycles[0], L_cycles=cycles[1], gradient=mode)
            memory[mode, cycles] = saved_activation_bytes(model, inputs)
    assert memory["one_step", (3, 7)] <= 1.15 * memory["one_step", (1, 3)]
    assert memory["full", (3, 7)] > 4 * memory["full", (1, 3)]
    assert memory["one_step", (3, 7)] < memory["last_cycle", (3, 7)] < memory["full", (3, 7)]


def test_target_exposures_become_the_seeds_actions_through_the_no_trade_band():
    held = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.6, 0.5])
    target = torch.tensor([0.3, -0.8, 0.03, 0.52, 0.9, 0.02, -0.4, 0.0, 0.46])
    position = next_position(target, held, band=0.05)
    assert position.tolist() == pytest.approx([0.3, -0.8, 0.0, 0.5, 0.9, 0.0, -0.4, 0.0, 0.5])
    assert action_of(position, held).tolist() == [
        BUY_LONG,  # entry
        SELL_SHORT,
        HOLD,  # inside the band around flat
        HOLD,  # a small change
        BUY_LONG,  # a resize to +0.9
        CLOSE_LONG,  # a target inside the band around 0 closes
        SELL_SHORT,  # a flip
        CLOSE_SHORT,
        HOLD,
    ]


def test_the_loss_path_executes_the_band_and_lets_gradient_through():
    policy = PolicyConfig(max_tilt=1.0)
    targets = torch.tensor([[0.3, 0.32, 0.5, 0.02, -0.3]])
    logits = torch.atanh(targets).requires_grad_()
    zero, one = torch.zeros(()), torch.ones(())
    bench, cap = torch.zeros_like(targets), torch.ones_like(targets)
    _, raw, positions = execute_path(logits, bench, cap, zero, one, policy, band=0.05)
    assert raw.tolist()[0] == pytest.approx(targets.tolist()[0], abs=1e-6)
    assert positions.tolist()[0] == pytest.approx([0.3, 0.3, 0.5, 0.0, -0.3], abs=1e-6)
    positions.sum().backward()
    expected = (1 - targets**2).tolist()  # d tanh: straight through the band, the held bar still learns
    assert logits.grad.tolist()[0] == pytest.approx(expected[0], rel=1e-5)


def test_the_policy_is_the_benchmark_plus_a_bounded_tilt_that_reads_the_tilt_held():
    policy = PolicyConfig(max_tilt=0.5)
    bench, cap = torch.tensor([0.8, 0.8, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    logit = torch.tensor([0.0, 5.0, -5.0])
    zero, one = torch.zeros(()), torch.ones(())
    _, target, _ = decide_exposure(logit, torch.zeros(3), bench, cap, zero, one, policy, 0.05)
    assert target.tolist() == pytest.approx(
        [0.8, 1.0, -0.5], abs=1e-4
    )  # a zero tilt is the benchmark; capped
    _, gated, _ = decide_exposure(logit, torch.zeros(3), bench, cap, zero, zero, policy, 0.05)
    assert gated.tolist() == pytest.approx(bench.tolist())  # the gate off: exactly the benchmark
    held = torch.tensor([0.3, 0.3, 0.3])  # a tilt of −1 held on the first two, +0.6 on the last
    hold = torch.tensor(2.0)
    kept, _, _ = decide_exposure(logit, held, bench, cap, hold, one, policy, 0.05)
    assert kept.tolist() == pytest.approx(torch.tanh(logit + 2.0 * torch.tensor([-1.0, -1.0, 0.6])).tolist())


def test_the_volatility_targeted_benchmark_uses_only_bars_up_to_the_decision():
    rng = np.random.default_rng(0)
    close = np.concatenate(
        [100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))), 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))]
    )
    symbol = np.repeat([0, 1], [300, 200])
    policy, trading = PolicyConfig(), TradingConfig()
    got = benchmark_exposure(close, symbol, policy, trading)
    for sid in (0, 1):
        series = pd.Series(close[symbol == sid])
        vol = np.log(series).diff().rolling(20).std() * np.sqrt(252)
        expected = (0.15 / vol).clip(upper=1.0).fillna(0.0).to_numpy()
        np.testing.assert_allclose(got[symbol == sid], expected, rtol=1e-9, atol=1e-12)
    changed = close.copy()
    changed[150:] *= 1.5
    assert np.array_equal(benchmark_exposure(changed, symbol, policy, trading)[:150], got[:150])
    assert (benchmark_exposure(close, symbol, PolicyConfig(benchmark="flat"), trading) == 0).all()
    assert (benchmark_exposure(close, symbol, PolicyConfig(benchmark="buy_and_hold"), trading) == 1).all()


def test_volatility_adjusted_sizing_caps_the_exposure_at_the_risk_budget():
    trading = TradingConfig(position_sizing_method="volatility_adjusted", risk_per_trade=0.01)
    close, atr = torch.tensor([100.0, 100.0]), torch.tensor([2.0, 0.1])
    # risk 1 % of equity over 1.5 ATR: 0.01 / (1.5 * 2 / 100) = 0.333; a tiny ATR hits the 1.0 cap
    assert exposure_cap(close, atr, trading).tolist() == pytest.approx([1 / 3, 1.0])
    assert exposure_cap(close, atr, TradingConfig()).tolist() == [1.0, 1.0]


def test_every_served_head_receives_gradient():
    model = make_model()
    _, out = model.segment(model.initial_carry(6), make_inputs())
    assert torch.allclose(out.regime_probs.sum(-1), torch.ones(6))
    output_loss(out).backward()
    for name in ("tilt", "outcome", "regime"):
        head = getattr(model.heads, name)
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0, name


def force_q(model: HRMTrader, halt: float, cont: float) -> None:
    with torch.no_grad():
        model.heads.q.weight.zero_()
        model.heads.q.bias.copy_(torch.tensor([halt, cont]))


def test_act_halts_at_the_budget_on_q_and_explores_a_random_minimum():
    model, inputs = make_model(), make_inputs()
    force_q(model, halt=-5.0, cont=5.0)  # never wants to halt: the budget stops it
    run = run_segments(model, inputs, segments=4, act=True)
    assert run.steps.tolist() == [4] * 6 and len(run.outputs) == 4
    force_q(model, halt=5.0, cont=-5.0)  # halts after the first segment
    run = run_segments(model, inputs, segments=4, act=True)
    assert run.steps.tolist() == [1] * 6 and len(run.outputs) == 1
    g = torch.Generator().manual_seed(0)
    explored = run_segments(model, make_inputs(), segments=4, act=True, exploration_prob=1.0, generator=g)
    assert ((explored.steps >= 2) & (explored.steps <= 4)).all()
    assert len(set(explored.steps.tolist())) > 1
    no_act = run_segments(model, inputs, segments=3, act=False)
    assert no_act.steps.tolist() == [3] * 6


def halting_by_one_feature(model: HRMTrader, inputs: MarketInputs):
    """Make q_halt one summary feature (× 50), the first whose sign differs across the samples, so
    some samples halt early and others run on; returns that run of 3 segments."""
    for feature in range(model.heads.q.weight.shape[1]):
        force_q(model, halt=-5.0, cont=5.0)
        with torch.no_grad():
            model.heads.q.weight[0, feature] = 50.0
            run = run_segments(model, inputs, segments=3, act=True)
        if 0 < int((run.steps < 3).sum()) < inputs.batch:
            return run_segments(model, inputs, segments=3, act=True)
    raise AssertionError("no summary feature splits the samples")


def test_halted_samples_keep_their_decision_and_reset_restores_initial_states():
    model, inputs = make_model(), make_inputs()
    run = halting_by_one_feature(model, inputs)
    early = run.steps < 3
    assert early.any() and not early.all()
    for m, decision in enumerate(run.outputs):
        halted_before = run.steps < m + 1
        torch.testing.assert_close(
            decision.tilt_logit[halted_before], run.outputs[m - 1].tilt_logit[halted_before]
        )
        assert (run.live[m] == ~halted_before).all()
    carry = run.carry
    reset = model.reset(carry, torch.tensor([True, False, True, False, False, False]))
    fresh = model.initial_carry(6)
    torch.testing.assert_close(reset.z_H[0], fresh.z_H[0])
    torch.testing.assert_close(reset.z_L[1], carry.z_L[1])


def agent_config(**model) -> HRMConfig:
    return HRMConfig(model={"hidden_size": 32, "num_heads": 4, "halt_max_steps": 3, **model})


def test_the_streaming_agent_decides_as_the_batch_model_does_on_the_same_bars():
    model = make_model().eval()
    with torch.no_grad():
        model.heads.hold.fill_(1.5)  # each decision reads the tilt the previous one left
    agent = HRMTradingAgent(model, agent_config(), act=True)
    bars = [make_inputs(batch=1, seed=s) for s in range(5)]
    cap = torch.ones(1)
    held, streamed = torch.zeros(1), []
    for inputs in bars:
        decision = agent.decide(inputs, cap, held, torch.zeros_like(cap))
        streamed.append(float(decision.target[0]))
        held = decision.position
    batch = MarketInputs(
        strategic=torch.cat([b.strategic for b in bars]), tactical=torch.cat([b.tactical for b in bars])
    )
    with torch.no_grad():
        run = run_segments(model, batch, 3, act=True)
        heads, config = model.heads, agent_config()
        zeros = torch.zeros(1, len(bars))
        _, targets, _ = execute_path(
            run.final.tilt_logit[None], zeros, zeros + 1, heads.hold, heads.tilt_gate, config.policy, 0.05
        )
    assert streamed == pytest.approx(targets[0].tolist(), abs=1e-6)


def test_the_agent_keeps_h_between_refreshes_when_asked_to():
    model = make_model().eval()
    agent = HRMTradingAgent(model, agent_config(h_update_interval=3), act=False)
    cap, held = torch.ones(6), torch.zeros(6)
    agent.decide(make_inputs(seed=0), cap, held, held)
    kept = agent.z_H.clone()
    agent.decide(make_inputs(seed=1), cap, held, held)  # bar 1: no refresh, H unchanged
    torch.testing.assert_close(agent.z_H, kept)
    agent.decide(make_inputs(seed=2), cap, held, held)
    agent.decide(make_inputs(seed=3), cap, held, held)  # bar 3: refresh
    assert not torch.allclose(agent.z_H, kept)


def test_the_flat_baseline_has_the_same_parameter_count_and_no_recurrence():
    from hrm_core.model.flat import FlatTrader

    torch.manual_seed(0)
    config = ModelConfig(hidden_size=32, num_heads=4, H_layers=2, L_layers=1, h_pool=10)
    hrm = HRMTrader(config, SHAPE)
    flat = FlatTrader(config, SHAPE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(hrm) == count(flat)
    carry = flat.initial_carry(6)
    same_carry, out = flat.segment(carry, make_inputs())
    assert same_carry is carry and out.tilt_logit.shape == (6,)


@pytest.mark.parametrize("hidden, H_layers, L_layers", [(32, 1, 1), (32, 2, 1), (64, 2, 2)])
def test_the_gru_baseline_is_within_a_quarter_of_the_hrms_parameter_count(hidden, H_layers, L_layers):
    from hrm_core.model.gru import GRUTrader

    config = ModelConfig(hidden_size=hidden, num_heads=4, H_layers=H_layers, L_layers=L_layers, h_pool=10)
    hrm = HRMTrader(config, SHAPE)
    gru = GRUTrader(config, SHAPE)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(gru) / count(hrm) - 1) < 0.25
    carry = gru.initial_carry(6)
    same_carry, out = gru.segment(carry, make_inputs())
    assert same_carry is carry and out.tilt_logit.shape == (6,)
    output_loss(out).backward()
    assert all(p.grad is not None for p in gru.gru.parameters())


def test_the_fixed_initial_states_are_saved_with_the_model():
    model = make_model()
    state = model.state_dict()
    assert {"H_init", "L_init"} <= state.keys()
    other = make_model()
    torch.manual_seed(123)
    other.H_init.normal_()
    other.load_state_dict(state)
    torch.testing.assert_close(other.initial_carry(2).z_H, model.initial_carry(2).z_H)


def test_inference_makes_no_grad_mode_switches(monkeypatch):
    model, inputs = make_model(H_cycles=2, L_cycles=3), make_inputs()
    carry = model.initial_carry(6)
    switches = []
    original = torch.set_grad_enabled
    with torch.no_grad():
        monkeypatch.setattr(torch, "set_grad_enabled", lambda mode: switches.append(mode) or original(mode))
        model.segment(carry, inputs)
        assert switches == []
    switches.clear()
    model.segment(carry, inputs)  # training: all but the last L and H update under no_grad
    assert switches == [False, False, False, False, False, False, True, True]  # L L L H, L L L H
