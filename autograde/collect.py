"""Turn what an instructor has into one Submission per student, and say what was odd about it.

Two layouts are understood:
  submitted  source/<student>/<assignment>/<files> (+ timestamp.txt), as nbgrader writes it;
  loose      files as an LMS exports them, in a .zip or a folder, one per student and file,
             their names parsed by nbgrader's own FileNameCollectorPlugin into student_id,
             file_id and timestamp, exactly as `nbgrader zip_collect` parses them.

Nothing is silently dropped: duplicates, misnamed notebooks, names nobody can parse, unknown or
missing students and unusable student ids each become a Problem an instructor can act on.
Nothing is written to disk either: zip entries are read into memory, and every name is checked
before it becomes a file name, so an entry called ../../etc/x cannot land anywhere.
"""
import csv
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from nbgrader.plugins.zipcollect import FileNameCollectorPlugin
from nbgrader.utils import parse_utc

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # nbgrader's warnings about names repeat what our Problems say

JUNK = {"__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints"}  # made by an OS or Jupyter, never by a student
TIMESTAMP_FILE = "timestamp.txt"
NBGRADER_TIME = "%Y-%m-%d %H:%M:%S.%f UTC"  # how nbgrader writes timestamp.txt
DASHED_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[-_T ](\d{2})[-_](\d{2})[-_](\d{2})$")  # 2026-11-22-09-30-15


@dataclass
class Submission:
    student: str         # nbgrader student id
    files: dict          # file name inside the assignment folder -> bytes
    timestamp: str | None  # as nbgrader writes timestamp.txt, if known
    origin: str          # where it came from (relative path in the folder/zip)


@dataclass
class Problem:
    student: str | None
    origin: str
    message: str

    def __str__(self):
        return f"{self.student or '(unknown student)'} [{self.origin}]: {self.message}"


@dataclass
class Intake:
    submissions: list = field(default_factory=list)  # Submission, sorted by student
    problems: list = field(default_factory=list)     # Problem, one per oddity


@dataclass
class _File:
    """One file of one student, before duplicates and names are sorted out."""
    student: str
    name: str
    data: bytes
    timestamp: str | None
    origin: str


def collect(source, assignment, expected_files, roster=None, named_regexp=None):
    """Submissions of `assignment` found in `source` (a submitted/ folder, a .zip or a folder of loose files)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    intake = Intake()
    if _is_submitted_layout(source, assignment):
        files, students = _read_submitted(source, assignment, intake.problems)
    else:
        files, students = _read_loose(source, assignment, named_regexp, intake.problems)
    valid = set()
    for student in sorted(students):
        theirs = [f for f in files if f.student == student]
        if not _usable_student_id(student):
            origin = theirs[0].origin if theirs else student
            intake.problems.append(Problem(student, origin, (
                f"student id {student!r} cannot be an nbgrader folder name (it is empty, contains / or \\, "
                f"or starts with '.'); their files were not collected. Rename the file or folder.")))
            continue
        valid.add(student)
        submission = _submission(student, theirs, assignment, set(expected_files), intake.problems)
        if submission:
            intake.submissions.append(submission)
    if roster is not None:
        intake.problems += _roster_problems(valid, set(roster), assignment, source)
    return intake


def read_roster(path):
    """Student ids from a CSV with an `id` column (the file `nbgrader db student import` reads)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel puts a BOM before `id`
        reader = csv.DictReader(handle)
        if "id" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no 'id' column (its columns: {reader.fieldnames or 'none'}); "
                             f"nbgrader's `db student import` needs one, holding each student's id")
        return {row["id"].strip() for row in reader if (row["id"] or "").strip()}


# --- reading the two layouts -------------------------------------------------------------------

def _is_submitted_layout(source, assignment):
    return source.is_dir() and any((child / assignment).is_dir() for child in source.iterdir())


def _read_submitted(source, assignment, problems):
    """source/<student>/<assignment>/... -> files, and every student folder seen."""
    files, students, junk = [], set(), []
    for folder in sorted(source.iterdir()):
        if _is_junk(folder.name):
            junk.append(folder.name)
        elif folder.is_symlink() or (folder / assignment).is_symlink():
            link = folder if folder.is_symlink() else folder / assignment
            problems.append(_link_problem(folder.name, link, source, f"{folder.name}'s submission"))
        elif not folder.is_dir():
            problems.append(Problem(None, folder.name, f"file {folder.name} lies outside any student's "
                                    f"folder, so it is nobody's submission; not graded"))
        else:
            students.add(folder.name)
            files += _read_assignment_folder(source, folder.name, folder / assignment, junk, problems)
    _report_junk(junk, source, problems)
    return files, students


def _read_assignment_folder(source, student, folder, junk, problems):
    if not folder.is_dir():
        return []
    stamp = folder / TIMESTAMP_FILE
    timestamp = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None
    files = []
    for path in _regular_files(folder, source, problems, student):
        name = path.relative_to(folder).as_posix()
        if _is_junk(name):
            junk.append(path.relative_to(source).as_posix())
        elif path != stamp:
            files.append(_File(student, name, path.read_bytes(), timestamp, folder.relative_to(source).as_posix()))
    return files


def _regular_files(folder, source, problems, student=None):
    """Every regular file under `folder`, sorted; a symbolic link (to a file or a folder) is reported, never followed:
    a link could hand in anyone's work, or the solutions, as the student's."""
    found = []
    for top, folders, names in os.walk(folder, followlinks=False):
        for name in sorted(folders + names):
            path = Path(top, name)
            if path.is_symlink():
                problems.append(_link_problem(student, path, source, "it"))
                if name in folders:
                    folders.remove(name)
            elif name in names and path.is_file():
                found.append(path)
    return sorted(found)


def _link_problem(student, link, source, what):
    where = link.relative_to(source).as_posix()
    return Problem(student, where, f"{where} is a symbolic link (to {os.readlink(link)}); links are not followed, "
                                   f"so {what} was not read. Hand in the file or folder itself.")


def _read_loose(source, assignment, named_regexp, problems):
    """LMS-style loose files -> files, and every student named by a file."""
    entries, junk = _loose_entries(source, problems)
    _report_junk(junk, source, problems)
    if not entries:
        problems.append(Problem(None, str(source), f"nothing to collect: {source} holds no submission files"))
        return [], set()
    parser = _file_name_parser(named_regexp, entries, source, assignment)
    files, students = [], set()
    for origin, data in entries:
        info = parser.collect(origin) or {}
        student, file_id = info.get("student_id"), info.get("file_id")
        if student is None or not file_id:
            problems.append(Problem(None, origin, (
                f"cannot tell whose file {origin} is: its name does not match the file name pattern "
                f"{parser.named_regexp!r} (student_id and file_id); not graded. Rename it or fix the pattern.")))
            continue
        students.add(student)
        # nbgrader's rule: the file keeps its own extension whatever file_id says
        name = os.path.splitext(file_id)[0] + os.path.splitext(origin)[1]
        if not _is_safe_path(name):
            problems.append(Problem(student, origin, f"file name {name!r} would lie outside the student's "
                                    f"{assignment} folder; not graded"))
            continue
        timestamp = _nbgrader_time(info.get("timestamp"), student, origin, problems)
        files.append(_File(student, name, data, timestamp, origin))
    return files, students


def _loose_entries(source, problems):
    """(relative path, bytes) of every file in a .zip or folder, and the junk that was skipped."""
    entries, junk = [], []
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = info.filename.replace("\\", "/")  # some Windows tools write \ in zip names
                if info.is_dir() or _is_junk(name):
                    junk.append(name)
                elif not _is_safe_path(name):
                    problems.append(Problem(None, name, f"zip entry {name!r} points outside the archive "
                                            f"(absolute path or '..'); not read"))
                else:
                    entries.append((name, archive.read(info)))
    elif source.is_dir():
        for path in _regular_files(source, source, problems):
            name = path.relative_to(source).as_posix()
            if _is_junk(name):
                junk.append(name)
            else:
                entries.append((name, path.read_bytes()))
    else:
        raise ValueError(f"{source} is neither a folder nor a .zip file")
    return sorted(entries), junk


def _file_name_parser(named_regexp, entries, source, assignment):
    """nbgrader's FileNameCollectorPlugin, told to look at every file, not only notebooks."""
    # valid_ext: nbgrader skips non-notebooks silently; we keep them and report them instead
    extensions = sorted({os.path.splitext(name)[1] for name, _ in entries})
    parser = FileNameCollectorPlugin(log=log, valid_ext=extensions)
    if named_regexp is not None:
        parser.named_regexp = named_regexp
    if not {"student_id", "file_id"} <= set(re.compile(parser.named_regexp).groupindex):
        raise ValueError(
            f"{source} was read as loose LMS files (no student folder in it has a {assignment}/ subfolder), "
            f"so a named_regexp with (?P<student_id>...) and (?P<file_id>...) groups is needed to tell "
            f"whose each file is; got {parser.named_regexp!r}. nbgrader has no default; its docs use "
            r"'.*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.*)'")
    return parser


# --- one student's files -> one Submission -----------------------------------------------------

def _submission(student, files, assignment, expected, problems):
    kept = _latest_of_each(files, problems)
    _fix_names(student, kept, assignment, expected, problems)
    wanted = sorted(n for n in expected if n.endswith(".ipynb"))
    if not any(n in kept for n in wanted):
        found = ", ".join(sorted(kept)) or "nothing"
        problems.append(Problem(student, files[0].origin if files else student, (
            f"no submission of {assignment} from {student}: expected {', '.join(wanted)}, found {found}")))
        return None
    for name in wanted:
        if name not in kept:
            problems.append(Problem(student, kept[next(iter(kept))].origin,
                                    f"{student} did not submit {name} of {assignment}; it scores zero"))
    stamps = [f.timestamp for f in kept.values() if f.timestamp]
    return Submission(student, {name: f.data for name, f in sorted(kept.items())},
                      max(stamps, key=_when) if stamps else None,
                      ", ".join(sorted({f.origin for f in kept.values()})))


def _latest_of_each(files, problems):
    """name -> the one copy kept: the latest timestamp, ties broken by the last origin."""
    by_name = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    kept = {}
    for name, copies in by_name.items():
        copies.sort(key=lambda f: (_when(f.timestamp), f.origin))
        kept[name] = copies[-1]
        if len(copies) > 1:
            aside = ", ".join(f.origin for f in copies[:-1])
            problems.append(Problem(copies[-1].student, copies[-1].origin, (
                f"{copies[-1].student} submitted {name} {len(copies)} times; kept {copies[-1].origin} "
                f"(timestamp {copies[-1].timestamp or 'unknown'}), set aside {aside}")))
    return kept


def _fix_names(student, kept, assignment, expected, problems):
    """Rename a lone misnamed notebook to the one expected; report (and drop) other strays."""
    wanted = [n for n in expected if n.endswith(".ipynb")]
    strays = sorted(n for n in kept if n not in expected)
    stray_notebooks = [n for n in strays if n.endswith(".ipynb")]
    if len(wanted) == 1 and len(stray_notebooks) == 1 and wanted[0] not in kept:
        got, want = stray_notebooks[0], wanted[0]
        kept[want] = kept.pop(got)
        strays.remove(got)
        problems.append(Problem(student, kept[want].origin, (
            f"{student} submitted notebook {got} instead of {want}; renamed it to {want} and graded it")))
    if not any(n in kept for n in wanted):
        return  # nothing will be graded: the "no submission" problem lists what was found instead
    listing = ", ".join(sorted(expected))
    for name in strays:
        if name.endswith(".ipynb"):
            origin = kept.pop(name).origin  # an extra notebook nbgrader has no tests for
            problems.append(Problem(student, origin, (
                f"{student} submitted notebook {name}, which is not one of the expected files of "
                f"{assignment} ({listing}); not graded")))
        else:
            problems.append(Problem(student, kept[name].origin, (
                f"{student} submitted {name}, which is not one of the expected files of {assignment} "
                f"({listing}); kept beside the notebook but not graded")))


def _roster_problems(students, roster, assignment, source):
    problems = [Problem(s, str(source), f"student {s} is not on the roster; collected anyway. "
                        f"Check the id, or add them to the roster") for s in sorted(students - roster)]
    problems += [Problem(s, str(source), f"student {s} is on the roster but has no submission of "
                         f"{assignment} in {source}") for s in sorted(roster - students)]
    return problems


# --- small checks ------------------------------------------------------------------------------

def _usable_student_id(student):
    return bool(student) and "/" not in student and "\\" not in student and not student.startswith(".")


def _is_safe_path(name):
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name
            and not re.match(r"[A-Za-z]:", name))  # C:foo is absolute on Windows


def _is_junk(name):
    return any(part in JUNK for part in PurePosixPath(name).parts)


def _report_junk(junk, source, problems):
    if junk:
        shown = ", ".join(junk[:10]) + (f" and {len(junk) - 10} more" if len(junk) > 10 else "")
        problems.append(Problem(None, str(source), f"ignored {len(junk)} folders or OS files that are "
                                f"nobody's submission: {shown}"))


def _nbgrader_time(text, student, origin, problems):
    """A timestamp from a file name, written as nbgrader writes timestamp.txt; None if absent or unreadable."""
    if not text:
        return None
    try:
        return _parse_time(text).strftime(NBGRADER_TIME)
    except (ValueError, OverflowError):
        problems.append(Problem(student, origin, f"timestamp {text!r} in the name of {origin} is not a date; "
                                f"treated as unknown (older than any dated copy)"))
        return None


def _when(timestamp):
    """A timestamp as a comparable UTC datetime; unknown or unreadable ones count as oldest."""
    try:
        return _parse_time(timestamp) if timestamp else datetime.min
    except (ValueError, OverflowError):
        return datetime.min


def _parse_time(text):
    """nbgrader's parse_utc, but first spelling out a dashed time such as 2026-11-22-09-30-15,
    which dateutil (so `nbgrader zip_collect` too) silently misreads as 2026-11-23 00:00."""
    dashed = DASHED_TIME.match(text.strip())
    return parse_utc(f"{dashed[1]} {dashed[2]}:{dashed[3]}:{dashed[4]}" if dashed else text)
