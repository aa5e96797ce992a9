"""autograde.collect: both layouts, and every oddity reported as a Problem an instructor can act on."""
import zipfile

import pytest

from autograde.collect import collect, read_roster

A = "01_mle_and_nll"
NB = f"{A}.ipynb"
EXPECTED = {NB}
# LMS-style names: <student>_attempt_<timestamp>_<file>, optionally inside folders
REGEXP = r"(?:.*/)?(?P<student_id>[^_/]*)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)"
T1, T2 = "2026-11-20-10-00-00", "2026-11-22-09-30-15"


def notebook(who):
    return f'{{"cells": [], "who": "{who}"}}'.encode()


def only_problem(intake, *words):
    """The one problem whose message (or student) holds all these words."""
    found = [p for p in intake.problems if all(w in f"{p.student} {p.message}" for w in words)]
    assert len(found) == 1, f"expected one problem with {words}, got {found} among {intake.problems}"
    return found[0]


def submitted_folder(root, files):
    """nbgrader's submitted layout from {"student/assignment/file": bytes or str}."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def loose(tmp_path, kind, files):
    """The same loose files, as a .zip or as a folder."""
    if kind == "zip":
        path = tmp_path / "export.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return path
    return submitted_folder(tmp_path / "export", files)


# --- the submitted layout ----------------------------------------------------------------------

def test_submitted_layout_collects_each_student_with_timestamp(tmp_path):
    source = submitted_folder(tmp_path / "submitted", {
        f"alice/{A}/{NB}": notebook("alice"),
        f"alice/{A}/timestamp.txt": "2026-11-23 12:00:00.000000 UTC\n",
        f"alice/{A}/data/extra.csv": "x\n1\n",
        f"bob/{A}/{NB}": notebook("bob"),
        f"bob/{A}/.ipynb_checkpoints/{A}-checkpoint.ipynb": notebook("old"),
        f"carol/02_softmax_and_cross_entropy/02_softmax_and_cross_entropy.ipynb": notebook("carol"),
        f"dave/{A}/notes.txt": "I ran out of time",
    })
    intake = collect(source, A, EXPECTED)
    assert [s.student for s in intake.submissions] == ["alice", "bob"]
    alice, bob = intake.submissions
    assert alice.files == {NB: notebook("alice"), "data/extra.csv": b"x\n1\n"}
    assert alice.timestamp == "2026-11-23 12:00:00.000000 UTC"
    assert alice.origin == f"alice/{A}"
    assert bob.files == {NB: notebook("bob")} and bob.timestamp is None
    only_problem(intake, "carol", "no submission of", A, NB, "found nothing")
    only_problem(intake, "dave", "no submission of", A, NB, "notes.txt")
    only_problem(intake, "alice", "data/extra.csv", "not one of the expected files", NB)
    only_problem(intake, "ignored", ".ipynb_checkpoints")
    assert len(intake.problems) == 4


def test_submitted_layout_reports_stray_files_and_hidden_folders(tmp_path):
    source = submitted_folder(tmp_path / "submitted", {
        f"alice/{A}/{NB}": notebook("alice"),
        f".eve/{A}/{NB}": notebook("eve"),
        "grades.csv": "id,score\n",
    })
    intake = collect(source, A, EXPECTED)
    assert [s.student for s in intake.submissions] == ["alice"]
    only_problem(intake, ".eve", "cannot be an nbgrader folder name", "not collected")
    assert only_problem(intake, "grades.csv", "outside any student's folder").student is None
    assert len(intake.problems) == 2


# --- the loose layout, from a zip or a folder ---------------------------------------------------

@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_loose_files_are_parsed_with_nbgraders_plugin(tmp_path, kind):
    source = loose(tmp_path, kind, {
        f"alice_attempt_{T1}_{NB}": notebook("alice"),
        f"course/bob_attempt_{T2}_{A}.ipynb": notebook("bob"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert intake.problems == []
    assert [(s.student, s.files) for s in intake.submissions] == [
        ("alice", {NB: notebook("alice")}), ("bob", {NB: notebook("bob")})]
    # written as nbgrader writes timestamp.txt, so nbgrader can read it back
    assert intake.submissions[0].timestamp == "2026-11-20 10:00:00.000000 UTC"
    assert intake.submissions[1].origin == f"course/bob_attempt_{T2}_{A}.ipynb"


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_duplicates_keep_the_latest_and_report_the_rest(tmp_path, kind):
    # the latest attempt sorts first by name, so "keep the last file" would keep the wrong one
    source = loose(tmp_path, kind, {
        f"a/alice_attempt_{T2}_{NB}": notebook("alice late"),
        f"b/alice_attempt_{T1}_{NB}": notebook("alice early"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    [alice] = intake.submissions
    assert alice.files == {NB: notebook("alice late")}
    # read as written: dateutil alone would make this 2026-11-23 00:00
    assert alice.timestamp == "2026-11-22 09:30:15.000000 UTC"
    problem = only_problem(intake, "alice", NB, "2 times", f"kept a/alice_attempt_{T2}",
                           f"set aside b/alice_attempt_{T1}")
    assert problem.student == "alice"
    assert len(intake.problems) == 1


def test_duplicates_with_equal_timestamps_keep_the_last_by_name(tmp_path):
    source = loose(tmp_path, "zip", {
        f"b/alice_attempt_{T1}_{NB}": notebook("second"),
        f"a/alice_attempt_{T1}_{NB}": notebook("first"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert intake.submissions[0].files == {NB: notebook("second")}
    only_problem(intake, "alice", "kept b/", "set aside a/")


def test_unreadable_timestamp_is_reported_and_counts_as_oldest(tmp_path):
    source = loose(tmp_path, "zip", {
        f"alice_attempt_2026-99-99_{NB}": notebook("undated"),
        f"alice_attempt_{T1}_{NB}": notebook("dated"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert intake.submissions[0].files == {NB: notebook("dated")}
    only_problem(intake, "alice", "2026-99-99", "not a date", "unknown")
    only_problem(intake, "alice", "2 times", "set aside alice_attempt_2026-99-99")


# --- names ---------------------------------------------------------------------------------------

def test_a_lone_misnamed_notebook_is_renamed(tmp_path):
    source = loose(tmp_path, "zip", {
        f"alice_attempt_{T1}_my_work.ipynb": notebook("alice"),
        f"alice_attempt_{T1}_helper.py": b"print(1)",
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    [alice] = intake.submissions
    assert alice.files == {NB: notebook("alice"), "helper.py": b"print(1)"}
    only_problem(intake, "alice", "my_work.ipynb", f"renamed it to {NB}")
    only_problem(intake, "alice", "helper.py", "not one of the expected files", A, NB, "kept")
    assert len(intake.problems) == 2


def test_misnamed_notebooks_are_not_graded_when_the_choice_is_unclear(tmp_path):
    source = submitted_folder(tmp_path / "submitted", {
        f"alice/{A}/try1.ipynb": notebook("1"), f"alice/{A}/try2.ipynb": notebook("2"),  # which one?
        f"bob/{A}/{NB}": notebook("bob"), f"bob/{A}/scratch.ipynb": notebook("scratch"),  # has the real one
    })
    intake = collect(source, A, EXPECTED)
    assert [(s.student, s.files) for s in intake.submissions] == [("bob", {NB: notebook("bob")})]
    only_problem(intake, "bob", "notebook scratch.ipynb", "not one of the expected files", NB, "not graded")
    # alice has nothing to grade: one problem says so and names what she sent
    only_problem(intake, "alice", "no submission of", A, f"expected {NB}", "found try1.ipynb, try2.ipynb")
    assert len(intake.problems) == 2


def test_no_rename_when_several_notebooks_are_expected(tmp_path):
    expected = {NB, "bonus.ipynb"}
    source = submitted_folder(tmp_path / "submitted", {
        f"alice/{A}/{NB}": notebook("alice"), f"alice/{A}/mine.ipynb": notebook("?"),
    })
    intake = collect(source, A, expected)
    assert intake.submissions[0].files == {NB: notebook("alice")}
    only_problem(intake, "alice", "mine.ipynb", "bonus.ipynb", NB, "not graded")
    only_problem(intake, "alice", "did not submit bonus.ipynb", "zero")
    assert len(intake.problems) == 2


def test_names_the_pattern_cannot_parse_are_reported(tmp_path):
    source = loose(tmp_path, "zip", {
        f"alice_attempt_{T1}_{NB}": notebook("alice"),
        "final_version.ipynb": notebook("whose?"),
        "README": b"from the LMS",
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert [s.student for s in intake.submissions] == ["alice"]
    for name in ["final_version.ipynb", "README"]:
        problem = only_problem(intake, f"whose file {name} is", "does not match", "student_id", "not graded")
        assert problem.student is None and problem.origin == name
    assert len(intake.problems) == 2


def test_student_ids_nbgrader_cannot_use_are_skipped(tmp_path):
    source = loose(tmp_path, "folder", {
        f"_attempt_{T1}_{NB}": notebook("nobody"),
        f".eve_attempt_{T1}_{NB}": notebook("eve"),
        f"a\\b_attempt_{T1}_{NB}": notebook("backslash"),
        f"alice_attempt_{T1}_{NB}": notebook("alice"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert [s.student for s in intake.submissions] == ["alice"]
    for bad in ["''", "'.eve'", "'a\\\\b'"]:
        only_problem(intake, f"student id {bad}", "cannot be an nbgrader folder name", "not collected")
    assert len(intake.problems) == 3


# --- roster -----------------------------------------------------------------------------------------

def test_roster_reports_unknown_and_missing_students(tmp_path):
    source = loose(tmp_path, "zip", {
        f"alice_attempt_{T1}_{NB}": notebook("alice"),
        f"zed_attempt_{T1}_{NB}": notebook("zed"),
    })
    roster_csv = tmp_path / "students.csv"
    roster_csv.write_text("\ufeffid,first_name,last_name\nalice,Alice,A\nbob,Bob,B\n\n", encoding="utf-8")
    roster = read_roster(roster_csv)
    assert roster == {"alice", "bob"}
    intake = collect(source, A, EXPECTED, roster=roster, named_regexp=REGEXP)
    assert [s.student for s in intake.submissions] == ["alice", "zed"]  # unknown, but still collected
    only_problem(intake, "zed", "not on the roster", "collected anyway")
    only_problem(intake, "bob", "on the roster", "no submission of", A)
    assert len(intake.problems) == 2


def test_read_roster_needs_an_id_column(tmp_path):
    path = tmp_path / "students.csv"
    path.write_text("student,email\nalice,a@x\n")
    with pytest.raises(ValueError, match=r"no 'id' column.*student.*email"):
        read_roster(path)


# --- unsafe names, junk, nothing at all, misuse ------------------------------------------------------

def test_zip_entries_cannot_escape(tmp_path):
    source = loose(tmp_path, "zip", {
        "../../etc/x": b"evil",
        f"../alice_attempt_{T1}_{NB}": notebook("evil"),
        "/abs/bob_attempt_x.ipynb": notebook("evil"),
        f"..\\..\\carol_attempt_{T1}_{NB}": notebook("evil"),
        f"alice_attempt_{T1}_{NB}": notebook("alice"),
    })
    before = sorted(p for p in tmp_path.parent.rglob("*"))
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert sorted(p for p in tmp_path.parent.rglob("*")) == before  # nothing written anywhere
    assert [(s.student, s.files) for s in intake.submissions] == [("alice", {NB: notebook("alice")})]
    for name in ["../../etc/x", f"../alice_attempt_{T1}_{NB}", "/abs/bob_attempt_x.ipynb",
                 f"../../carol_attempt_{T1}_{NB}"]:
        problem = only_problem(intake, f"zip entry {name!r}", "outside the archive", "not read")
        assert problem.origin == name
    assert len(intake.problems) == 4


def test_parsed_file_names_cannot_escape_the_student_folder(tmp_path):
    source = loose(tmp_path, "zip", {"alice_/etc/passwd.ipynb": b"evil"})
    intake = collect(source, A, EXPECTED, named_regexp=r"(?P<student_id>[a-z]+)_(?P<file_id>.+)")
    assert intake.submissions == []
    only_problem(intake, "alice", "'/etc/passwd.ipynb'", "outside", A, "not graded")
    only_problem(intake, "alice", "no submission of", A)


def test_os_junk_is_ignored_and_reported_in_one_line(tmp_path):
    source = loose(tmp_path, "zip", {
        f"__MACOSX/._alice_attempt_{T1}_{NB}": b"resource fork",
        ".DS_Store": b"finder", "sub/Thumbs.db": b"thumbs", "sub/": b"",
        f"sub/alice_attempt_{T1}_{NB}": notebook("alice"),
    })
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert [(s.student, s.files) for s in intake.submissions] == [("alice", {NB: notebook("alice")})]
    problem = only_problem(intake, "ignored 4", "__MACOSX", ".DS_Store", "Thumbs.db", "sub/")
    assert problem.student is None
    assert len(intake.problems) == 1


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_an_empty_source_is_reported(tmp_path, kind):
    source = loose(tmp_path, kind, {})
    if kind == "folder":
        source.mkdir()  # an empty folder: loose() wrote nothing into it
    intake = collect(source, A, EXPECTED, roster={"alice"})  # no pattern needed to find nothing
    assert intake.submissions == []
    only_problem(intake, "nothing to collect", str(source))
    only_problem(intake, "alice", "on the roster", "no submission of", A)
    assert len(intake.problems) == 2


def test_loose_files_without_a_pattern_are_refused_clearly(tmp_path):
    source = loose(tmp_path, "zip", {f"alice_attempt_{T1}_{NB}": notebook("alice")})
    with pytest.raises(ValueError, match=r"named_regexp.*student_id.*file_id"):
        collect(source, A, EXPECTED)
    with pytest.raises(ValueError, match="student_id"):
        collect(source, A, EXPECTED, named_regexp=r"(?P<file_id>.+)")


def test_a_missing_source_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect(tmp_path / "nope", A, EXPECTED)


# --- symbolic links: reported, never followed (a link could hand in the solutions as the student's work) -------

def test_links_in_a_submitted_folder_are_reported_and_not_followed(tmp_path):
    secret = tmp_path / "solutions"
    secret.mkdir()
    (secret / NB).write_text("THE SOLUTIONS")
    source = submitted_folder(tmp_path / "submitted", {f"alice/{A}/notes.txt": "mine",
                                                       f"bob/{A}/{NB}": notebook("bob")})
    (source / "alice" / A / NB).symlink_to(secret / NB)
    (source / "alice" / A / "data").symlink_to(secret)
    (source / "carol").mkdir()
    (source / "carol" / A).symlink_to(secret)
    (source / "dave").symlink_to(source / "bob")
    intake = collect(source, A, EXPECTED)
    assert [s.student for s in intake.submissions] == ["bob"]
    assert all(b"THE SOLUTIONS" not in data for s in intake.submissions for data in s.files.values())
    only_problem(intake, "alice", f"alice/{A}/{NB} is a symbolic link", "not followed")
    only_problem(intake, "alice", f"alice/{A}/data is a symbolic link")
    only_problem(intake, "carol", f"carol/{A} is a symbolic link", "not read")
    only_problem(intake, "dave", "dave is a symbolic link", "not read")


def test_links_among_loose_files_are_reported_and_not_followed(tmp_path):
    (tmp_path / "solutions.ipynb").write_text("THE SOLUTIONS")
    source = loose(tmp_path, "folder", {f"alice_attempt_{T1}_{NB}": notebook("alice")})
    (source / f"bob_attempt_{T1}_{NB}").symlink_to(tmp_path / "solutions.ipynb")
    (source / "more").symlink_to(tmp_path)
    intake = collect(source, A, EXPECTED, named_regexp=REGEXP)
    assert [s.student for s in intake.submissions] == ["alice"]
    only_problem(intake, f"bob_attempt_{T1}_{NB} is a symbolic link")
    only_problem(intake, "more is a symbolic link")
