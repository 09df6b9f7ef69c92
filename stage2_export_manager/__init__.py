"""Stage 2, the research side: import stage-1 media, approve a policy per study, export.

Modules, one concept each:

* :mod:`~stage2_export_manager.importer`: PDI media → store copies and one job per study;
* :mod:`~stage2_export_manager.screening`: refuse media that still carry direct identifiers;
* :mod:`~stage2_export_manager.approval`: approve / reject / retry, and :func:`approved_policy`,
  which the exporter calls to reload the approved policy and refuse one edited since;
* :mod:`~stage2_export_manager.preview`: what a policy would change in a study, for the reviewer;
* :mod:`~stage2_export_manager.jobs`: the job table, details and history for the CLI;
* ``exporter`` and ``scheduler``: anonymize and send approved jobs; the serve loop.

Conventions shared by these modules: a job's audit events use the subject ``job-<id>``
(:func:`approval.job_subject`), so ``tce stage2 job ID`` shows them as its history; stored files
live at ``stage2.store_dir/<study UID>/<series UID>/<SOP instance UID>.dcm`` (stage-1 UIDs).
"""
