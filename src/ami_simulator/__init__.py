"""A faithful AMI simulator, derived from captures of real Asterisk, for the demo and tests."""
