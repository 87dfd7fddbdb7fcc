"""The uWSGI app: the unit protocol, the admin pages, the fleet view and the API."""
