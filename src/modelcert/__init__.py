"""modelcert: certifies AI model deployments, per region, with live tests."""

__version__ = "0.2.0"
