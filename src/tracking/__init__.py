"""Face tracking and crops: MediaPipe landmarks of one followed face per frame, face segments and smoothed
crop boxes (``tracker``), and the square crops with their frame <-> crop transforms (``crops``)."""
