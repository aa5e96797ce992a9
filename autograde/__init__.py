"""Grading setup: the nbgrader config, the class pipeline around it, and the demo class."""
