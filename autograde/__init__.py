"""Grading the course: nbgrader config, the batch grader and its sandbox, the release, handout, slides and demo."""
