"""Updates for the units: the tree they download from, `publish-update`, and what each unit got."""
