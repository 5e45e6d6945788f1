select
    payment_id,
    order_id,
    {{ cents_to_dollars('amount_cents') }} as amount,
    loaded_at
from {{ source('landing', 'payments') }}
