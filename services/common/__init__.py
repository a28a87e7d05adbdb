"""Helpers shared by the TransTIC services: settings, errors, logging, gRPC and serving."""
