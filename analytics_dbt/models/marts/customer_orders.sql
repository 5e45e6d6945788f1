with orders_per_customer as (
    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        count(*) as order_count,
        sum(amount) filter (where status <> 'returned') as lifetime_value
    from {{ ref('stg_orders') }}
    group by customer_id
)

select
    customers.customer_id,
    customers.full_name,
    customers.country,
    orders_per_customer.first_ordered_at,
    orders_per_customer.last_ordered_at,
    coalesce(orders_per_customer.order_count, 0) as order_count,
    coalesce(orders_per_customer.lifetime_value, 0) as lifetime_value
from {{ ref('stg_customers') }} as customers
left join orders_per_customer
    on customers.customer_id = orders_per_customer.customer_id
