"""The benchmark suite of Webround Webhooks: `python -m bench.run [--quick]` (see README.md)."""
