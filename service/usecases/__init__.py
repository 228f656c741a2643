"""What NextBest does, one module per use case: decide, alert, stream, erase, retrain, score."""
