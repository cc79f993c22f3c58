"""The `fpgaas` command: one entry point over the builder and the service."""
