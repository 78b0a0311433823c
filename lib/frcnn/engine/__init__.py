"""The training engine: a small Trainer (forward / backward / optimizer step) extended by hooks
(lr schedule, logging, TensorBoard, finite-loss check, gradient check, snapshots, evaluation),
and the Checkpointer that writes and resumes snapshots exactly."""
from frcnn.engine.checkpoint import Checkpointer, ConfigMismatch, run_signature
from frcnn.engine.hooks import (FiniteLossCheck, FirstStepGradCheck, LRSchedule, MetricsPrinter,
                                PeriodicEval, Snapshot, TensorBoard)
from frcnn.engine.trainer import HookBase, Trainer

__all__ = ["Trainer", "HookBase", "Checkpointer", "ConfigMismatch", "run_signature",
           "LRSchedule", "MetricsPrinter", "TensorBoard", "FiniteLossCheck",
           "FirstStepGradCheck", "Snapshot", "PeriodicEval"]
