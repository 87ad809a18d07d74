"""nbgrader settings for students: `nbgrader validate` and JupyterLab's Validate button.

`make venv` copies this file to `.venv/etc/jupyter/`, so it applies whichever folder validate runs in
(nbgrader also reads it from the current folder: Binder and Colab sessions start in the repository).
The instructor's grader does not read it: `python -m autograder` configures nbgrader explicitly.
"""
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

# Exercise and test cells carry the `skip-execution` tag so the book build does not run them;
# validate must run them, or it would report success for an unanswered notebook.
c.Execute.skip_cells_with_tag = "validate-runs-every-cell"
# A few chapter cells load or train small models: more than nbgrader's 30-second default per cell.
c.Execute.timeout = 600
