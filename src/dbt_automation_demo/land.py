"""`nox -s land`: a batch of payments lands in the landing zone, as an EL tool drops a file.

Each batch is one CSV file of a few payments, every row stamped with the time it landed
(`loaded_at`, the source's `loaded_at_field`), named after that time so batches never collide.
The next observation of the dbt sources sees new data, and the views over them refresh once.
"""

import os
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

LANDING_ZONE_ENV = "DBT_LANDING_ZONE"
ROWS = 5


def land_a_batch(landing_zone: Path, now: datetime, rows: int = ROWS) -> Path:
    """Write one batch of `rows` payments under `landing_zone`/payments, stamped `now`."""
    folder = landing_zone / "payments"
    folder.mkdir(parents=True, exist_ok=True)
    batch = folder / f"batch_{now:%Y%m%dT%H%M%S%f}.csv"
    first = int(now.timestamp() * 1000) % 10**9
    lines = ["payment_id,order_id,amount_cents,loaded_at"]
    draw = random.Random(first)
    for number in range(rows):
        order, cents = draw.randint(1, 500), draw.randint(500, 25_000)
        lines.append(f"{first + number},{order},{cents},{now:%Y-%m-%d %H:%M:%S}")
    batch.write_text("\n".join(lines) + "\n")
    return batch


def main() -> None:
    landing_zone = Path(os.environ.get(LANDING_ZONE_ENV, "analytics_dbt/landing"))
    batch = land_a_batch(landing_zone, datetime.now(UTC))
    print(f"landed {batch} ({ROWS} payments); the next source observation sees it")


if __name__ == "__main__":
    sys.exit(main())
