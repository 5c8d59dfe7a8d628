"""Training the face representation on real face photos (issue 14, section 1).

:mod:`export.faces.data` reads the labelled still photos, cuts the model's face crop and
splits by identity; :mod:`export.faces.teacher` rebuilds ``fer``'s FER2013 Keras classifier in
torch (training time only); :mod:`export.faces.train` trains the ``small`` FaceEncoder with
expression, distillation and valence / arousal heads and writes a ``face_encoder.pt`` that
:func:`export.pretrain.load_face_encoder` reads.
"""
