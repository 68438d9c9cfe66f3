"""Scores how far a numeric answer is from the truth (0 when exact)."""


def compute_scores(sample, solver_output):
    try:
        given = float(solver_output.text)
    except (TypeError, ValueError):
        return {"scores": {"abs_error": 1000.0, "parsed": 0.0}, "metadata": {"reason": "not a number"}}
    error = abs(given - float(sample["answer"]))
    return {"scores": {"abs_error": error, "parsed": 1.0}}
