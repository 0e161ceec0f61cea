"""``MongoStep``: what every MongoDB step type shares — its target and its warm-up."""

from __future__ import annotations

from drctl.runbook.targets import MongoTarget
from drctl.steps.base import I, StepContext, StepType


class MongoStep(StepType[I, MongoTarget]):
    """Base of the ``mongo.*`` step types: a required ``mongo`` target, pymongo warmed up."""

    target_types = frozenset({"mongo"})
    target_required = True

    def warm_up(self) -> None:
        import pymongo
        import pymongo.errors  # noqa: F401


#: The context a MongoDB step type with inputs ``I`` gets.
MongoContext = StepContext[I, MongoTarget]
