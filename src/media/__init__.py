"""Media I/O shared by training-data preparation, dubbing and evaluation: the frame-rate / sample-rate /
crop-size contract (``contract``), decoding at that frame rate with aligned audio (``decode``) and random
access to decoded frames (``frames.FrameReader``)."""
