select
    id as customer_id,
    first_name,
    last_name,
    country,
    signed_up_at,
    first_name || ' ' || last_name as full_name,
    lower(email) as email
from {{ ref('raw_customers') }}
