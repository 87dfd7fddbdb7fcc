"""The database: schema and connections, the writers, the queries the layers above share."""
