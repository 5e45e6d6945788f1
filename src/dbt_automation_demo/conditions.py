"""The tie-safe ``since`` of the pattern: a trigger is spent only by a request made before it.

Dagster's ``trigger.since(reset)`` lets the reset win when both become true on the same
evaluation, unless both sides are single operands carrying timing metadata
(dagster-io/dagster#33587): ``eager()`` and ``any_deps_updated()`` are compositions, so a parent
update that lands between a request and the next tick is lost. ``SinceLastRequested`` keeps it.

Written on Dagster's condition-evaluation API (``BuiltinAutomationCondition``, ``EntitySubset``,
``@record``), which Dagster does not export: docs/internals.md lists these names with the rest,
and tests/test_internals_guard.py guards them.
"""

import asyncio
from collections.abc import Sequence

import dagster as dg
from dagster import AutomationCondition
from dagster._core.asset_graph_view.entity_subset import EntitySubset
from dagster._core.definitions.declarative_automation.automation_condition import (
    BuiltinAutomationCondition,
)
from dagster._record import record


@record
class SinceLastRequested(BuiltinAutomationCondition):
    """``trigger.since(newly_requested() & ~trigger)``, reading the trigger once.

    True from the evaluation on which ``trigger`` is true until the evaluation after a request
    on which ``trigger`` is not true again. ``newly_requested()`` is true on the evaluation
    *after* the request, so a trigger that arrives in between is not spent by a request made
    before it. Built from Dagster's ``since()``, the reset must repeat the trigger's whole tree.
    """

    trigger: AutomationCondition

    @property
    def name(self) -> str:
        return "since_last_requested"

    @property
    def children(self) -> Sequence[dg.AutomationCondition]:
        return [self.trigger, dg.AutomationCondition.newly_requested()]

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        # As Dagster's since(): both sides over every partition, so no transition is missed.
        everything = context.asset_graph_view.get_full_subset(key=context.key)
        trigger_result, requested_result = await asyncio.gather(
            *(
                context.for_child_condition(
                    child, child_indices=[index], candidate_subset=everything
                ).evaluate_async()
                for index, child in enumerate(self.children)
            )
        )
        true_subset = since_last_requested(
            context, trigger_result.true_subset, requested_result.true_subset
        )
        return dg.AutomationResult(
            context, true_subset, child_results=[trigger_result, requested_result]
        )


def since_last_requested(
    context: dg.AutomationContext, trigger: EntitySubset, newly_requested: EntitySubset
) -> EntitySubset:
    """`trigger.since(newly_requested & ~trigger)` on this evaluation: what was true before, or
    is triggered now, less what the last request spent (a trigger that came after it stays)."""
    before = context.previous_true_subset or context.get_empty_subset()
    return before.compute_union(trigger).compute_difference(
        newly_requested.compute_difference(trigger)
    )
