select
    date_trunc('month', ordered_at)::date as order_month,
    count(*) as order_count,
    count(*) filter (where status = 'completed') as completed_count,
    count(*) filter (where status in ('returned', 'return_pending')) as return_count,
    sum(amount) filter (where status <> 'returned') as revenue
from {{ ref('stg_orders') }}
group by 1
