"""Fixtures every test folder shares (cfrec_assets_tests/, testkit/tests/) come from the test kit."""

pytest_plugins = ["cfrec_testkit.pytest_plugin"]
