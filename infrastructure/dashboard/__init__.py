"""The merchant dashboard (SPEC §9): server-rendered pages under ``/dashboard`` on the API's
Starlette app — sign in with an API key, webhooks, events, the audit log.

Pages are Jinja2 templates with autoescaping; forms post back to the server; there is no
JavaScript build step (a few inline lines make the copy button of a one-time secret).
The session is a sealed cookie (`session.py`); the routes call the same applications and
queries as the JSON API (`routes.py`). Decisions: docs/adr/0010-dashboard.md.
"""
