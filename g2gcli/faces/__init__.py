"""Faces: detection, landmarks, alignment, face geometry, paste-back, preprocessing, the masked-rest inputs, and
dlib's recognition network (read from its weights file, built as ONNX with numpy) with its embeddings."""
