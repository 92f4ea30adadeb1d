"""Model: the FCIB network and its weights, the DFM50N random forest and its lifecycle (import, train, demo).

torch and scikit-learn are imported inside functions only; may import `geometry` and the top-level modules,
never Slicer.
"""
