"""The evaluation report written after test_net (report.py): COCO metrics, confusion matrix,
F1-best thresholds, the TIDE error breakdown, the worst images, figures and report.html."""
