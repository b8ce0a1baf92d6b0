"""What a user's text may put into a path: dataset names, and path templates of a date, which render `{{ ds }}`
and `{{ ds_nodash }}` by replacement (no template engine runs, so no expression in a form or a spec can run code)."""

from __future__ import annotations

import re
from datetime import date

DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_PLACEHOLDER = re.compile(r"\{\{\s*(ds|ds_nodash)\s*\}\}")
# A path template: the two placeholders, and otherwise no `{{ }}`, `{% %}` or `{# #}` delimiter (a single `{`, as
# in Hadoop's `{a,b}`, is fine). The same text is the JSON-schema pattern of the scoring form's `input` field.
DATE_TEMPLATE_PATTERN = r"^(?:\{\{\s*ds(?:_nodash)?\s*\}\}|[^{}%#]|\{(?![{%#])|\}(?!\})|[%#](?!\}))*$"
ALLOWED_PLACEHOLDERS = "{{ ds }} and {{ ds_nodash }}"


def check_date_template(template: str) -> str:
    """The template, if its only template syntax is `{{ ds }}` / `{{ ds_nodash }}`; a one-line ValueError naming
    it otherwise."""
    if not re.fullmatch(DATE_TEMPLATE_PATTERN, template):
        raise ValueError(f"path template {template!r} may use only {ALLOWED_PLACEHOLDERS}")
    return template


def render_date_template(template: str, day: date) -> str:
    """`template` with `{{ ds }}` as `day` (YYYY-MM-DD) and `{{ ds_nodash }}` as YYYYMMDD (`check_date_template`
    first)."""
    values = {"ds": day.isoformat(), "ds_nodash": day.strftime("%Y%m%d")}
    return _PLACEHOLDER.sub(lambda match: values[match[1]], check_date_template(template))
