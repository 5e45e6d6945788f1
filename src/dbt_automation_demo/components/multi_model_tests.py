"""The dbt tests that read more than one model, in a run: each one the run plans runs whenever
every model it reads exists, and is deferred, visibly, while one has never been built.

dagster-dbt runs a subset of a project as `dbt build --select <models>`, and the component's
default `--indirect-selection buildable` then leaves out every test that reads a model outside
the run, even one built long ago: the `relationships` test of a view refreshed alone never ran.
Here each such test the run plans (a check selected for it) is selected by name when the other
models it reads exist (built before, or in this run), and excluded by name, with a warning that
names the missing model, when one of them has never been built. The component's automation
plans one only once every model it reads exists (`automation.run_as_soon_as_every_model_exists`),
so a deferral here comes from a run started by hand.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

UNIQUE_ID = "dagster_dbt/unique_id"
MANIFEST = "dagster_dbt/manifest"


@dataclass(frozen=True)
class DeferredTest:
    """A planned test that reads a model never built: excluded from the run, and said so."""

    check_key: dg.AssetCheckKey
    fqn: str  # its dbt selection string
    missing: list[str]  # the models it reads that were never built

    def warning(self) -> str:
        return (
            f"dbt test {self.check_key.name} (a check on "
            f"{self.check_key.asset_key.to_user_string()}) is deferred, not run: it also reads "
            f"{', '.join(self.missing)}, which has never been built. It runs once every model "
            "it reads exists."
        )


@dataclass
class MultiModelTests:
    """The run's planned tests on several models: selected by name, or deferred."""

    selected: list[str] = field(default_factory=list)  # dbt selection strings (FQNs)
    deferred: list[DeferredTest] = field(default_factory=list)

    def cli_args(self) -> list[str]:
        """dbt's arguments for them, each list as one argument (dagster-dbt passes one value
        per flag on to dbt)."""
        args = []
        if self.selected:
            args += ["--select", " ".join(self.selected)]
        if self.deferred:
            args += ["--exclude", " ".join(test.fqn for test in self.deferred)]
        return args


def multi_model_tests(context: dg.AssetExecutionContext) -> MultiModelTests:
    """Which of the run's planned checks that read other models run, and which wait."""
    assets_def = context.assets_def
    planned = {}
    for check_key in context.selected_asset_check_keys:
        spec = assets_def.get_spec_for_check_key(check_key)
        others = {dep.asset_key for dep in spec.additional_deps}
        if others:
            planned[check_key] = (spec, others)
    tests = MultiModelTests()
    if not planned:
        return tests
    manifest = _manifest(assets_def)
    # Every asset of the dbt project (a run's `keys` are only those it selected); a dbt source
    # is not built here, and dbt's test reads it as it is.
    built_here = set(assets_def.node_keys_by_output_name.values())
    never_built = _never_built(
        context.instance,
        {key for _, others in planned.values() for key in others & built_here}
        - set(context.selected_asset_keys),
    )
    for check_key, (spec, others) in sorted(planned.items(), key=lambda item: str(item[0])):
        fqn = ".".join(manifest["nodes"][spec.metadata[UNIQUE_ID]]["fqn"])
        missing = sorted(key.to_user_string() for key in others & never_built)
        if missing:
            tests.deferred.append(DeferredTest(check_key, fqn, missing))
        else:
            tests.selected.append(fqn)
    return tests


def _manifest(assets_def: dg.AssetsDefinition) -> Mapping[str, Any]:
    spec = next(iter(assets_def.specs))
    return spec.metadata[MANIFEST].manifest


def _never_built(instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """The keys among `keys` that have no materialization, in one query."""
    if not keys:
        return set()
    built = {
        record.asset_entry.asset_key
        for record in instance.get_asset_records(list(keys))
        if record.asset_entry.last_materialization_record is not None
    }
    return keys - built
