"""The shared core: settings, errors, UTC time, locking, request checks, free space.

Imports nothing else of the package, so every layer can use it."""
