{# Amounts are stored in cents; models show currency units. #}
{% macro cents_to_dollars(column_name) -%}
    ({{ column_name }} / 100.0)
{%- endmacro %}
