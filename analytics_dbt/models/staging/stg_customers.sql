select
    id as customer_id,
    first_name,
    last_name,
    first_name || ' ' || last_name as full_name,
    lower(email) as email,
    country,
    signed_up_at
from {{ ref('raw_customers') }}
