"""dbt State's reuse settings, read from the dbt project where dbt State reads them.

dbt State (dbt platform) decides per node whether to build it or reuse its last build, from the
node's `state` config: `+state: {lag_tolerance: {count: 4, period: hour},
require_fresh_data_from: all}` in `dbt_project.yml` (project or folder), `config(state=...)` in a
model, or `config: state:` in its properties file. dbt Core 1.11 keeps that config on the node
as it is (its JSON schema, taken from dbt Fusion, declares `state` with these keys), so a project
configured for dbt State reads the same here. dbt Core validates it only for the adapters it
checks configs for (not DuckDB): every value is checked here, when the definitions load.

A node reuses when its config has `state` (a model, a folder, the project) or when the
component's `reuse` is true (every node, with dbt State's defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from dbt_automation_demo.reuse import DEFAULT_LAG_TOLERANCE, ReuseSettings

STATE_CONFIG = "state"
_PERIODS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_UPDATES_ON = ("any", "all")
# Keys of dbt State's `state` config that change what dbt runs, not whether: accepted, unused.
_IGNORED_KEYS = frozenset({"evaluate_volatile_sql", "execute_hooks_on_any_reuse", "pre_clone"})


class StateConfigError(ValueError):
    """A dbt node's `state` config has a value dbt State would not accept."""

    def __init__(self, node: Mapping[str, Any], key: str, value: object, reason: str):
        where = node.get("original_file_path", "?")
        super().__init__(
            f"dbt {node.get('resource_type', 'node')} {node.get('name')!r} ({where}, or the "
            f"dbt_project.yml folder config it inherits): `state.{key}` = {value!r}: {reason}"
        )


def reuse_settings(node: Mapping[str, Any], reuse_everything: bool) -> ReuseSettings | None:
    """The node's reuse settings, or None when it does not reuse (its config has no `state` and
    the component's `reuse` is false)."""
    state = node.get("config", {}).get(STATE_CONFIG)
    if state is None:
        return ReuseSettings() if reuse_everything else None
    if not isinstance(state, Mapping):
        raise StateConfigError(node, "", state, "must be a mapping (lag_tolerance, ...)")
    unknown = set(state) - {"lag_tolerance", "require_fresh_data_from"} - _IGNORED_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise StateConfigError(node, key, state[key], "not a key of dbt State's `state` config")
    tolerance = state.get("lag_tolerance")
    updates_on = _updates_on(node, "require_fresh_data_from", state.get("require_fresh_data_from"))
    if isinstance(tolerance, Mapping) and tolerance.get("updates_on") is not None:
        # dbt's schema lets `lag_tolerance` carry `updates_on` (its `build_after` rules) too.
        inner = _updates_on(node, "lag_tolerance.updates_on", tolerance["updates_on"])
        if updates_on is not None and inner != updates_on:
            raise StateConfigError(
                node, "lag_tolerance.updates_on", inner,
                f"contradicts `state.require_fresh_data_from` = {updates_on!r}",
            )  # fmt: skip
        updates_on = inner
    return ReuseSettings(
        lag_tolerance=(DEFAULT_LAG_TOLERANCE if tolerance is None else _duration(node, tolerance)),
        require_fresh_data_from=updates_on or "any",
    )


def _duration(node: Mapping[str, Any], tolerance: object) -> timedelta:
    """`{count: 4, period: hour}`, as dbt's `build_after` and dbt State's `lag_tolerance`."""
    if not isinstance(tolerance, Mapping):
        raise StateConfigError(
            node, "lag_tolerance", tolerance, "must be {count: <int>, period: minute|hour|day}"
        )
    unknown = set(tolerance) - {"count", "period", "updates_on"}
    if unknown:
        key = sorted(unknown)[0]
        raise StateConfigError(
            node, f"lag_tolerance.{key}", tolerance[key], "not a key of `lag_tolerance`"
        )
    count, period = tolerance.get("count"), tolerance.get("period")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise StateConfigError(node, "lag_tolerance.count", count, "must be a whole number >= 0")
    if period not in _PERIODS:
        raise StateConfigError(node, "lag_tolerance.period", period, "must be minute, hour or day")
    return count * _PERIODS[period]


def _updates_on(node: Mapping[str, Any], key: str, value: object) -> Literal["any", "all"] | None:
    if value is None or value in _UPDATES_ON:
        return value  # type: ignore[return-value]
    raise StateConfigError(node, key, value, "must be any or all")
