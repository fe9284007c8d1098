"""The one-machine deployment\x27s entry points (`taskgate serve`): every route group in one app, and `/ws`.\nNo Lambda function carries this package."""
