"""`dbt-blocking-tests` (internals/blocking_tests.py) against dbt's own `dbt build`: with a failed
`relationships` test on `stg_orders`, dbt still builds `order_summary` (it reads `stg_orders`
only: dbt-core#5277); ours skips everything below `stg_orders`. Real dbt processes, forked
from a process that imported dbt already (tests/preloaded_dbt.py starts either script)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dbt_automation_demo.internals.blocking_tests import DBT_EXECUTABLE
from harness import copy_dbt_project, land_orders_of_an_unknown_customer

pytestmark = pytest.mark.usefixtures("dbt_from_a_preloaded_process")
STG_ORDERS_AND_BELOW = ["--select", "stg_orders+", "--indirect-selection", "buildable"]


def dbt(executable: str, project_dir: Path, *args: str) -> dict[str, str]:
    """Run `executable` in the project: each node's status in dbt's run_results.json
    (success, pass, fail, skipped, ...), by name."""
    subprocess.run(
        [shutil.which(executable), *args, "--project-dir", project_dir,
         "--profiles-dir", project_dir],
        cwd=project_dir,
        env={**os.environ, "DBT_DUCKDB_PATH": str(project_dir / "data" / "analytics.duckdb")},
        capture_output=True,
        check=False,  # a failed test is what some of these runs are for
    )  # fmt: skip
    results = json.loads((project_dir / "target" / "run_results.json").read_text())["results"]
    return {result["unique_id"].split(".")[2]: result["status"] for result in results}


@pytest.fixture
def unknown_customer(tmp_path: Path) -> Path:
    """The shipped project, stg_orders' parents built, then an order of a customer who does
    not exist loaded."""
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    (project_dir / "data").mkdir(exist_ok=True)
    dbt("dbt", project_dir, "build", "--select", "raw_customers", "stg_customers", "raw_orders")
    land_orders_of_an_unknown_customer(project_dir)
    dbt("dbt", project_dir, "seed", "--select", "raw_orders")
    return project_dir


RELATIONSHIPS = "relationships_stg_orders_customer_id__customer_id__ref_stg_customers_"


def test_dbt_still_builds_past_a_failed_test_on_several_models(unknown_customer: Path):
    """The upstream rule the entry point corrects: when dbt-core changes it, this fails."""
    statuses = dbt("dbt", unknown_customer, "build", *STG_ORDERS_AND_BELOW)
    assert statuses[RELATIONSHIPS] == "fail"
    assert statuses["customer_orders"] == "skipped"  # reads both models of the test
    assert statuses["order_summary"] == "success"  # reads stg_orders only


def test_a_failed_test_on_several_models_skips_everything_below_the_model_it_tests(
    unknown_customer: Path,
):
    statuses = dbt(DBT_EXECUTABLE, unknown_customer, "build", *STG_ORDERS_AND_BELOW)
    assert statuses[RELATIONSHIPS] == "fail"
    models = {"stg_orders", "customer_orders", "order_summary", "customer_segments"}
    assert {name: statuses[name] for name in models} == {
        "stg_orders": "success",
        "customer_orders": "skipped",
        "order_summary": "skipped",
        "customer_segments": "skipped",
    }


def test_a_test_that_reads_a_child_of_its_model_closes_no_cycle(tmp_path: Path):
    """A test on stg_orders that also reads customer_orders (a child of stg_orders): an edge
    from it to customer_orders would close a cycle, so it is left out, and the build runs."""
    project_dir = copy_dbt_project(tmp_path / "analytics_dbt")
    (project_dir / "data").mkdir(exist_ok=True)
    schema = project_dir / "models" / "staging" / "schema.yml"
    schema.write_text(
        schema.read_text().replace(
            "                to: ref('stg_customers')\n                field: customer_id\n",
            "                to: ref('stg_customers')\n                field: customer_id\n"
            "          - relationships:\n              arguments:\n"
            "                to: ref('customer_orders')\n                field: customer_id\n",
            1,
        )
    )
    statuses = dbt(DBT_EXECUTABLE, project_dir, "build")
    assert statuses["relationships_stg_orders_customer_id__customer_id__ref_customer_orders_"] == (
        "pass"
    )
    assert statuses["order_summary"] == statuses["customer_orders"] == "success"
