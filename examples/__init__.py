"""Worked use cases for fpgaas: trained models, their data generators and their checks."""
