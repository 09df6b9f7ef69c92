"""The Receiver: a C-STORE/C-ECHO SCP that stores anonymized studies and writes them as PDI media.

``app`` wires the node, ``handlers`` answers C-STORE, ``storage`` turns UIDs into safe paths and
``media`` writes received studies with :mod:`pdi.writer`. Like every stage, nothing imports it.
"""
