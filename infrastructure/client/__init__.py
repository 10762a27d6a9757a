"""The `webround` commands that work over a running service's JSON API, as a merchant's
developer or a script would: `webhooks`, `events`, `deliveries` (`commands.py`) and
`listen` (`listen.py`), on the client of `http.py`. They need no database, no master key
and no configuration of the service: only `WEBROUND_API_URL` and `WEBROUND_API_KEY`.
"""
