"""The gateway process (`co2unit-server gateways`): other device families, over asyncio."""
