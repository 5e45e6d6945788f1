select
    customer_id,
    full_name,
    order_count,
    lifetime_value,
    case
        when order_count = 0 then 'prospect'
        when order_count >= 15 then 'champion'
        when order_count >= 8 then 'loyal'
        else 'occasional'
    end as segment
from {{ ref('customer_orders') }}
