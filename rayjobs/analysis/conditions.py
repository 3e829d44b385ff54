"""Which completed trials are distinct conditions: an ``after_peak`` trial whose RR never switched on trained
exactly as without RR (a replica of no RR), so it is labelled so and never counted as a condition of its own."""

from __future__ import annotations

import pandas as pd

PHASE_AWARE = "after_peak"
#: What the tables and the report call such a trial.
REPLICA = "replica of no RR (RR never switched on)"


def switch_steps(trials: pd.DataFrame, steps: pd.DataFrame | None = None) -> pd.Series:
    """Step at which each trial's RR switched on (``after_peak``), by trial_id: the trials table's ``rr_switch_step``,
    else the last ``rr/switch_step`` of its steps; NaN where it never did."""
    out = pd.Series(float("nan"), index=trials["trial_id"].astype(str).to_numpy(), dtype="float64")
    if "rr_switch_step" in trials:
        out[:] = pd.to_numeric(trials["rr_switch_step"], errors="coerce").to_numpy(dtype="float64")
    if steps is not None and "rr/switch_step" in steps and len(steps):
        recorded = steps.dropna(subset=["rr/switch_step"]).groupby("trial_id")["rr/switch_step"].last()
        missing = out.index[out.isna() & out.index.isin(recorded.index)]
        out[missing] = recorded[missing].to_numpy(dtype="float64")
    return out


def replicas(trials: pd.DataFrame, steps: pd.DataFrame | None = None) -> pd.Series:
    """True for each trial (aligned with ``trials``) that asked for after_peak RR but never had it switched on."""
    switched = switch_steps(trials, steps).to_numpy()
    coef = pd.to_numeric(trials["rr_coef"], errors="coerce").fillna(0.0).to_numpy()
    asked = (coef > 0) & (trials["rr_schedule"].astype(str).to_numpy() == PHASE_AWARE)
    return pd.Series(asked & pd.isna(switched), index=trials.index)


def rr_on(trials: pd.DataFrame, steps: pd.DataFrame | None = None) -> pd.Series:
    """True for each trial that trained with RR for some of its steps (a positive coefficient, and not a replica)."""
    coef = pd.to_numeric(trials["rr_coef"], errors="coerce").fillna(0.0)
    return (coef > 0) & ~replicas(trials, steps)
