"""``tce demo``: the whole chain on loopback with a generated sample, in one folder a user keeps.

Modules, one concept each:

* :mod:`appliance.demo.nodes`: run a node (``tce stage1 serve``, ``tce receiver serve``) as a
  child process on a free loopback port, wait until it answers C-ECHO, stop it with SIGTERM and
  require exit status 0. Meant to become the one runner the test harnesses share too.
* :mod:`appliance.demo.folders`: the demo folder layout and the node folders made by
  ``tce init``, with the few settings the demo changes edited in place (comments kept).
* :mod:`appliance.demo.sender`: C-STORE of a folder with pynetdicom (dcmtk is not required),
  skipping and reporting what is not a DICOM file.
* :mod:`appliance.demo.scan`: byte scan for the identifiers planted in the sample.
* :mod:`appliance.demo.table`: the before/after table of one instance through both stages.
* :mod:`appliance.demo.run`: the numbered steps the user sees.
"""
