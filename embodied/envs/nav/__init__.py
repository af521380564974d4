"""Navigation tasks (PointNav, ObjectNav, VLN, ObjectRecall), episodes and metrics."""
