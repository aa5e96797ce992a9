"""The course's one nbgrader config. Run nbgrader from this folder: `cd autograde && nbgrader ...`.

The course root is the repository: solutions/ is nbgrader's source directory; everything nbgrader
writes while grading stays under autograde/. nbgrader releases into build/release: its
generate_assignment (a plain command, or the formgrader's Generate) deletes the folder it writes, and
notebooks/, the committed release, may hold someone's edits. `make release` (autograde/release.py)
writes notebooks/, and refuses where it holds changes git does not have.
"""
import os

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = os.path.dirname(here)
c.CourseDirectory.course_id = "llm-losses"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "build/release"
c.CourseDirectory.submitted_directory = "autograde/submitted"
c.CourseDirectory.autograded_directory = "autograde/autograded"
c.CourseDirectory.feedback_directory = "autograde/feedback"
c.CourseDirectory.solution_directory = "autograde/solution"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
# The course hands out build/handout and takes notebooks back through an LMS (autograde.batch): nbgrader's exchange
# is not used. One on this machine, in build/, keeps JupyterLab's Assignment List working instead of erroring.
c.Exchange.root = os.path.join(os.path.dirname(here), "build", "exchange")

# A student who deleted a graded cell gets it back (marked as re-added) and is graded on the rest.
c.OverwriteCells.add_missing_cells = True
# Each cell gets 2 minutes; a student's infinite loop is interrupted and fails only that cell.
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True
# Feedback shows each test cell's name, score and the check's message, never the hidden tests' code.
c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades", "nbgrader.preprocessors.ClearHiddenTests",
                                    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]
