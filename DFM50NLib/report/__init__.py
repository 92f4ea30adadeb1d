"""Report: the HTML / PDF case report and the cohort summary (text, figures, CT views, PDF layout).

Reads `Result` objects and volumes; matplotlib only inside functions; never Slicer.
"""
