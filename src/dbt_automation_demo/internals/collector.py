"""Python's cyclic garbage collector, kept off the objects a large project loads.

Loading 5,000 models makes about 1.8 million objects, most of which live as long as the
process: dbt's parse, the manifest, every asset's definition. Python runs a full collection
each time its long-lived objects grow by a quarter, and each one walks all of them: 17 full
collections, 5.6 s of one `dg check defs` here; and one more as the process exits, 4.9 s more.
With the collector paused while the component parses and builds, and what the first build in a
process made then moved out of its reach (`gc.freeze()`), the same check spent 1.4 s in it.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_froze_a_build = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block, and one full collection after it (instead of
    one per quarter of growth), so that nothing the block dropped is frozen later."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()


@contextmanager
def built_once_for_the_process() -> Iterator[None]:
    """No cyclic garbage collection in the block; after the first such block in a process,
    every object then alive is frozen: later collections, and the one at exit, skip them.

    A code server, a run's process and `dg check defs` each build definitions once. A process
    that builds them again and again (tests, the benchmark) freezes only its first build, so
    what it frees later is bounded by that build: a cycle that was alive then is never freed.
    """
    global _froze_a_build
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not _froze_a_build:
            gc.freeze()
            _froze_a_build = True
        if was_enabled:
            gc.enable()
