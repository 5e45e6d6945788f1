"""`dbt`, where a failed test on more than one model stops everything below the model it tests.

dbt's `build` skips a node after a failed test only when the node depends on *all* of the
test's parents (dbt-core#5277; `Linker.add_test_edges`). dagster-dbt makes each test a check on
one model (a generic test's `attached_node`, a singular test's `meta.dagster.ref`), and a failed
blocking check means that nothing below that model runs. So a failed `relationships` test on
`stg_orders` (to `stg_customers`) skips `customer_orders`, which reads both, but dbt still builds
`order_summary`, which reads `stg_orders` only.

This entry point is dbt's own command line, with one more edge per test before dbt schedules a
build: from each test with more than one parent to each child of the model it checks. dbt then
runs the test before those children and skips them, and everything below them, when it fails,
whatever the adapter. An edge that would close a cycle (the child is also upstream of the test,
so dbt cannot test before building it) is left out. The component's runs start it as their
`dbt` (`DBT_EXECUTABLE`); every other command is dbt's, unchanged.
"""

import sys
from collections.abc import Iterator, Mapping
from typing import Any

# The name of this entry point's script (pyproject.toml), on PATH beside `dbt`.
DBT_EXECUTABLE = "dbt-blocking-tests"


def main() -> None:
    """`dbt` with the edges, as the `dbt` script runs it."""
    # dbt's commands: imported by this process only
    from dbt.cli.main import cli

    add_edges_below_tested_models()
    sys.exit(cli())


def add_edges_below_tested_models() -> None:
    """dbt's `Linker.add_test_edges` (run by `dbt build` only), followed by this module's."""
    from dbt.compilation import Linker

    if getattr(Linker.add_test_edges, "below_tested_models", False):
        return
    add_test_edges = Linker.add_test_edges

    def with_edges_below_tested_models(linker: Linker, manifest: Any) -> None:
        add_test_edges(linker, manifest)
        for test, child in edges_below_tested_models(linker.graph, manifest):
            linker.graph.add_edge(test, child, edge_type="parent_test")

    with_edges_below_tested_models.below_tested_models = True  # type: ignore[attr-defined]
    Linker.add_test_edges = with_edges_below_tested_models


def edges_below_tested_models(graph: Any, manifest: Any) -> Iterator[tuple[str, str]]:
    """(test, node) for each test with more than one parent and each child of the model it
    tests that is built (not a test), unless that child is upstream of the test."""
    import networkx as nx

    for test in manifest.nodes.values():
        if test.resource_type != "test" or len(set(test.depends_on_nodes)) < 2:
            continue
        tested = tested_model(test, manifest.nodes, manifest.metadata.project_name)
        if tested is None or tested not in graph or test.unique_id not in graph:
            continue
        upstream_of_test = nx.ancestors(graph, test.unique_id)
        for child in graph.successors(tested):
            node = manifest.nodes.get(child)
            if node is not None and node.resource_type != "test" and child not in upstream_of_test:
                yield test.unique_id, child


def tested_model(test: Any, nodes: Mapping[str, Any], project_name: str) -> str | None:
    """The unique id of the model a test with several parents is a Dagster check on, as
    dagster-dbt's `get_asset_check_key_for_test` decides it: the model named in the test's
    `meta.dagster.ref` (a package defaults to the root project), else its `attached_node`."""
    ref = (test.config.meta or test.meta or {}).get("dagster", {}).get("ref")
    if not ref:
        return getattr(test, "attached_node", None)
    wanted = (ref["name"], ref.get("package") or project_name, ref.get("version"))
    for unique_id, node in nodes.items():
        if (node.name, node.package_name, getattr(node, "version", None)) == wanted:
            return unique_id
    return None
