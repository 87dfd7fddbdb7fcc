"""A simulator of CO2 Observation Units: SD cards, the firmware's sync cycle, a fault proxy, fleets.

`co2unit-server simulate` runs a fleet against a server and verifies that nothing was lost.
"""
