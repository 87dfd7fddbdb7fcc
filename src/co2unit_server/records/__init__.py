"""The records of truth on disk and their pure formats: push store, ping log, raw logs, users,
the readings line and the devices' wire formats. No Flask, no sockets: core and database only."""
