"""TransTIC services: the edge encoder and the cloud analytics service."""
