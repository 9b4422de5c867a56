"""Configuration: the typed model of servers and options, loaded from flags and YAML."""
