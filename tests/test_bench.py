"""The benchmark's inputs and its completeness check (its figures are read, not asserted)."""

import filecmp

from bench.__main__ import _missing_figures, _parser, _plan, _row, _table, tick_plot
from bench.measure import Comparison
from bench.sources import SOURCE_MEASURES
from bench.synthetic import generate_project, shape_for


def files_of(project) -> dict[str, str]:
    return {str(path.relative_to(project)): path.read_text() for path in project.rglob("*.*")}


def test_synthetic_project_is_the_same_for_the_same_seed_and_differs_for_another(tmp_path):
    generate_project(tmp_path / "a", 200, seed=7)
    first = files_of(tmp_path / "a")
    generate_project(tmp_path / "b", 200, seed=7)
    generate_project(tmp_path / "c", 200, seed=8)
    assert files_of(tmp_path / "b") == first
    assert files_of(tmp_path / "c") != first
    assert not filecmp.dircmp(tmp_path / "a", tmp_path / "b").diff_files


def test_synthetic_project_is_half_views_half_tables_with_incrementals_and_sources(tmp_path):
    shape = generate_project(tmp_path / "p", 1000)
    models = list((tmp_path / "p" / "models").rglob("*.sql"))
    incremental = [m for m in models if "materialized='incremental'" in m.read_text()]
    views = [m for m in models if m.parent.name in {"staging", "intermediate"}]
    assert (len(models), len(views), len(incremental)) == (1000, 500, 100)
    assert shape == shape_for(1000)
    assert (shape.seeds, shape.sources) == (50, 2)
    assert len(list((tmp_path / "p" / "seeds").glob("*.csv"))) == 50
    sources_yml = (tmp_path / "p" / "models" / "staging" / "sources.yml").read_text()
    assert sources_yml.count("- name: events_") == 2


def test_completeness_check_names_every_missing_figure():
    figure = {
        "measure": "definitions build",
        "models": 100,
        "ours_seconds": 0.2,
        "stock_seconds": 0.0,
        "ratio": 0.0,
    }
    settings = plan("--sizes", "100", "--sources", "100")
    missing = _missing_figures({"figures": [figure], "settings": settings})
    assert missing == [
        "automation tick after observing every source @ 100",
        "automation tick @ 100",
        "automation tick, every node on every tick @ 100",
        "automation tick, no observation since @ 100",
        "automation tick, nothing changed @ 100",
        "automation tick, nothing changed, every node on every tick @ 100",
        "dev loop after an SQL edit @ 100",
        "materialize the demo (8 assets, 28 tests) @ None",
        "observe every source @ 100",
        "definitions build @ 100: stock_seconds",
        "definitions build @ 100: ratio",
        "a simulated week: the seed's policies",
        "a simulated week: eager() on every asset",
        "a simulated week: reuse (dbt State's defaults)",
    ]


def plan(*argv: str) -> dict:
    return _plan(_parser().parse_args(argv))


def splitting_and_daemon_figures_missing(settings: dict) -> list[str]:
    missing = _missing_figures({"figures": [], "settings": settings})
    return [name for name in missing if name.startswith(("automation, ", "daemon, "))]


def test_completeness_check_expects_the_splitting_and_daemon_figures_at_1000_models():
    assert splitting_and_daemon_figures_missing(plan("--quick")) == [
        "automation, at most 500 assets per sensor (default) @ 1000",
        "automation, by folder, at most 500 per sensor @ 1000",
        "automation, one sensor @ 1000",
        "daemon, 4 sensor threads @ 1000",
        "daemon, sensors one after another @ 1000",
    ]


def test_the_smoke_run_expects_every_kind_of_figure_at_100_models_once():
    smoke = plan("--smoke")
    assert (smoke["sizes"], smoke["repeat"], smoke["daemon_interval"]) == ((100,), 1, 5)
    assert splitting_and_daemon_figures_missing(smoke) == [
        "automation, at most 500 assets per sensor (default) @ 100",
        "automation, by folder, at most 500 per sensor @ 100",
        "automation, one sensor @ 100",
        "daemon, 4 sensor threads @ 100",
        "daemon, sensors one after another @ 100",
    ]
    missing = _missing_figures({"figures": [], "settings": smoke})
    assert "materialize the demo (8 assets, 28 tests) @ None" in missing
    assert {
        "observe every source @ 100",
        "automation tick after observing every source @ 100",
        "automation tick, no observation since @ 100",
    } <= set(missing)
    assert {name for name in missing if name.endswith("@ 100")} >= {
        "definitions build @ 100", "automation tick @ 100", "dev loop after an SQL edit @ 100",
        "automation tick, nothing changed @ 100",
    }  # fmt: skip


def test_the_quick_run_measures_observing_100_and_1000_sources():
    quick = plan("--quick")
    assert quick["source_sizes"] == (100, 1000)
    missing = set(_missing_figures({"figures": [], "settings": quick}))
    assert {f"{measure} @ {size}" for measure in SOURCE_MEASURES for size in (100, 1000)} <= missing
    assert SOURCE_MEASURES == (
        "observe every source",
        "automation tick after observing every source",
        "automation tick, no observation since",
    )


def test_a_figure_sized_in_sources_says_so():
    figure = Comparison("observe every source", 1000, "ours", "stock", 1.0, 2.0, 3,
                        size_unit="sources")  # fmt: skip
    assert _row(figure).startswith("| observe every source | 1,000 sources | ours: 1.00 s |")


def test_the_table_shows_every_kind_of_figure():
    kinds = {
        "definitions build": {},
        "automation, one sensor": {
            "sensors": 1, "threaded_round_seconds": 2.0, "slowest_sensor_tick_seconds": 2.0,
            "evaluations_per_asset_per_round": 1.0, "seconds_between_evaluations_of_an_asset": 30,
        },
        "daemon, 4 sensor threads": {
            "sensors": 3, "longest_interval_seconds": 35.0, "median_tick_seconds": 0.8,
            "longest_tick_seconds": 1.4,
        },
    }  # fmt: skip
    figures = [
        {**Comparison(measure, 1000, "ours", "stock", 1.0, 2.0, 3, details).as_dict()}
        for measure, details in kinds.items()
    ]
    report = {
        "figures": figures,
        "tick_cost_per_asset_growth_from_1000": None,
        "machine": {"cores": 2, "processor": "cpu", "python": "3.11"},
        "versions": {"dagster": "1"},
        "settings": {"repeat": 3},
        "total_seconds": 60.0,
    }
    lines = _table(report).splitlines()
    assert [line.split(" | ")[0] for line in lines if " | 1,000 | ours: 1.00 s" in line] == [
        "| definitions build",
        "| automation, one sensor",
        "| daemon, 4 sensor threads",
    ]
    assert [line for line in lines if line.startswith("| 1,000 |")] == [
        "| 1,000 | one sensor | 1 | 1.00 s | 2.00 s | 2.00 s | 1 | 30 s |",
        "| 1,000 | 4 sensor threads | 3 | 1.0 s | 35.0 s | 0.80 s | 1.40 s |",
    ]


def test_the_tick_plot_draws_each_side_against_the_size_busy_and_quiet():
    measures = {
        "automation tick": (0.5, 1.0),
        "automation tick, every node on every tick": (0.8, 1.0),
        "automation tick, nothing changed": (0.1, 0.9),
        "automation tick, nothing changed, every node on every tick": (0.4, 0.9),
    }
    figures = [
        Comparison(measure, size, "ours", "stock", ours * size, stock * size, 3).as_dict()
        for measure, (ours, stock) in measures.items()
        for size in (100, 1000)
    ]
    charts = "\n".join(tick_plot({"figures": figures}))
    lines = [line.strip() for line in charts.splitlines() if line.strip().startswith("line ")]
    assert lines == [
        "line [100.00, 1000.00]", "line [80.00, 800.00]", "line [50.00, 500.00]",
        "line [90.00, 900.00]", "line [40.00, 400.00]", "line [10.00, 100.00]",
    ]  # fmt: skip
    assert charts.count('x-axis "models" [100, 1000]') == 2
