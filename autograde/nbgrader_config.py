"""The course's one nbgrader config. Run nbgrader from this folder: `cd autograde && nbgrader ...`.

The course root is the repository: solutions/ is nbgrader's source directory and notebooks/
its release directory; everything nbgrader writes while grading stays under autograde/.
"""
import os

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = os.path.dirname(here)
c.CourseDirectory.course_id = "llm-losses"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = "autograde/submitted"
c.CourseDirectory.autograded_directory = "autograde/autograded"
c.CourseDirectory.feedback_directory = "autograde/feedback"
c.CourseDirectory.solution_directory = "autograde/solution"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")

# A student who deleted a graded cell gets it back (marked as re-added) and is graded on the rest.
c.OverwriteCells.add_missing_cells = True
# Each cell gets 2 minutes; a student's infinite loop is interrupted and fails only that cell.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# Feedback shows each test cell's name, score and the check's message, never the hidden tests' code.
c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades", "nbgrader.preprocessors.ClearHiddenTests",
                                    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]
