"""Reference solutions to the exercises in utils/exercises.py, one file per exercise.

Try the exercise in its notebook first; each file here passes its checker:

    from notebooks.solutions.ex03_verify_step import verify_step
    from utils.exercises import check_03
    check_03(verify_step)
"""
