"""The package version, in a module of its own so code inside fastcls never imports the facade."""

__version__ = "0.1.0"
