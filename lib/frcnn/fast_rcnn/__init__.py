"""The solver (train.py: train_model over the engine), testing (test.py: im_detect, test_net) and
re-evaluation (reval.py)."""
