"""Live status: units, gateway devices, and `check` over both."""
