"""co2unit-server: the server and data toolchain for CO2 Observation Units.

The package's top imports nothing: every module imports it first, so whatever it loaded would
be loaded by all of them (the app's factory is `co2unit_server.server.app.create_app`)."""
