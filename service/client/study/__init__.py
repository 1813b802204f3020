"""Reproduction studies run through snrlab itself: the study file, its report, the commands."""
