"""Regenerate raw_customers.csv and raw_orders.csv deterministically, and the bad orders of
the test-gate walkthrough (../demo_data/raw_orders_bad.csv, outside dbt's seed path).

Run from anywhere: ``python analytics_dbt/seeds/generate_seeds.py``. The same seed always
produces byte-identical files, and a test checks that the committed CSVs match.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta
from pathlib import Path

SEED = 20260101
CUSTOMER_COUNT = 100
ORDER_COUNT = 1000
FIRST_ORDER_DAY = date(2025, 1, 1)
DAYS_IN_YEAR = 365

FIRST_NAMES = [
    "Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas",
    "Kemi", "Liam", "Mei", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
]  # fmt: skip
LAST_NAMES = [
    "Alvarez", "Brown", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Hassan",
    "Ivanova", "Jensen", "Kowalski", "Lopez", "Müller", "Nakamura", "Okafor", "Patel",
]  # fmt: skip
COUNTRIES = ["DE", "FR", "GB", "NL", "US"]
# Most orders complete; a few are still moving or come back.
STATUS_WEIGHTS = {"completed": 70, "shipped": 12, "placed": 8, "returned": 6, "return_pending": 4}
# The bad orders: the last order in a status stg_orders' accepted_values test does not accept.
BAD_STATUS = "lost"
BAD_ORDERS = "../demo_data/raw_orders_bad.csv"

SEEDS_DIR = Path(__file__).resolve().parent


def customers_csv(rng: random.Random) -> str:
    rows = []
    for customer_id in range(1, CUSTOMER_COUNT + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        signup = FIRST_ORDER_DAY - timedelta(days=rng.randrange(0, 2 * DAYS_IN_YEAR))
        rows.append(
            [
                customer_id,
                first,
                last,
                f"{first}.{last}.{customer_id}@example.com".lower(),
                rng.choice(COUNTRIES),
                signup.isoformat(),
            ]
        )
    header = ["id", "first_name", "last_name", "email", "country", "signed_up_at"]
    return _to_csv(header, rows)


def orders_csv(rng: random.Random) -> str:
    # A skewed customer choice gives a realistic spread: a few heavy buyers, a long tail,
    # and some customers without any order.
    weights = [1 / (rank**0.8) for rank in range(1, CUSTOMER_COUNT + 1)]
    customer_ids = list(range(1, CUSTOMER_COUNT + 1))
    rng.shuffle(customer_ids)
    statuses, status_weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    rows = []
    for order_id in range(1, ORDER_COUNT + 1):
        ordered = FIRST_ORDER_DAY + timedelta(days=rng.randrange(DAYS_IN_YEAR))
        amount_cents = int(rng.lognormvariate(8.2, 0.6))
        rows.append(
            [
                order_id,
                rng.choices(customer_ids, weights)[0],
                ordered.isoformat(),
                rng.choices(statuses, status_weights)[0],
                amount_cents,
            ]
        )
    rows.sort(key=lambda row: (row[2], row[0]))
    header = ["id", "customer_id", "ordered_at", "status", "amount_cents"]
    return _to_csv(header, rows)


def bad_orders_csv(orders: str) -> str:
    """The orders, with the last one in a status that stg_orders' test rejects."""
    *rows, last = orders.splitlines()
    *fields, _status, amount = last.split(",")
    return "\n".join([*rows, ",".join([*fields, BAD_STATUS, amount])]) + "\n"


def _to_csv(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def generate() -> dict[str, str]:
    """Path relative to this folder -> CSV text, for the fixed seed."""
    rng = random.Random(SEED)
    customers, orders = customers_csv(rng), orders_csv(rng)
    return {
        "raw_customers.csv": customers,
        "raw_orders.csv": orders,
        BAD_ORDERS: bad_orders_csv(orders),
    }


def main() -> None:
    for name, text in generate().items():
        (SEEDS_DIR / name).parent.mkdir(exist_ok=True)
        (SEEDS_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote {SEEDS_DIR / name}")


if __name__ == "__main__":
    main()
