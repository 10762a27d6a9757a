"""The Starlette web application: the JSON API under /v1, health and (later) the dashboard."""
