"""The index of exercises (book/exercises.md) agrees with the chapter notebooks."""
from autograder.config import REPO_ROOT
from autograder.exercises import exercise_index
from autograder.notebook import graded_cells, read_notebook


def test_index_lists_every_graded_cell_of_every_chapter_with_a_title():
    rows = exercise_index(REPO_ROOT)
    notebooks = sorted((REPO_ROOT / "chapters").glob("*/*.ipynb"))
    assert notebooks and {row.chapter for row in rows} == {nb.parent.name for nb in notebooks}
    for path in notebooks:
        cells = graded_cells(read_notebook(path))
        listed = [row for row in rows if row.chapter == path.parent.name]
        assert [row.grade_id for row in listed] == [cell.grade_id for cell in cells]
        assert [row.points for row in listed] == [cell.points for cell in cells]
        assert [row.graded_by == "autograder" for row in listed] == [cell.autograded for cell in cells]
    assert all(row.title and "points)" not in row.title for row in rows)
    # Every chapter has written questions graded by a person as well as autograded exercises.
    for chapter in {row.chapter for row in rows}:
        kinds = {row.graded_by for row in rows if row.chapter == chapter}
        assert kinds == {"autograder", "instructor"}, f"{chapter}: {kinds}"
