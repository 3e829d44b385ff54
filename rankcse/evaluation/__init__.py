"""SentEval-compatible evaluation (STS, linguistic probing, transfer tasks) and the per-step evaluation of a training run."""

from rankcse.evaluation.sts import TASKS, evaluate_sts

__all__ = ["TASKS", "evaluate_sts"]
